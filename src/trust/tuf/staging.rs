//! How a TUF update reaches the cache: the current cache is copied into a staging directory
//! beside it, the update runs there, and only a verified result replaces the cache, in one
//! step where the kernel can make it one. Files only; no TUF here.

use std::io;
use std::path::{Path, PathBuf};

/// A fresh staging directory beside the cache, holding a copy of the current cache.
pub(super) fn staging_dir(cache_root: &Path, final_dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(cache_root)?;
    let base = final_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = cache_root.join(format!(".{base}.staging-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&staging)?;
    if final_dir.is_dir() {
        copy_tree(final_dir, &staging, 0)?;
    }
    Ok(staging)
}

/// Copy the cache's files (two levels: `root_history/`, `targets/`), no links followed.
fn copy_tree(from: &Path, to: &Path, depth: u8) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        } else if kind.is_dir() && depth < 2 {
            std::fs::create_dir_all(&dest)?;
            copy_tree(&entry.path(), &dest, depth + 1)?;
        }
    }
    Ok(())
}

/// Replace `final_dir` by `staging`, then remove the old cache. On Linux the two directories
/// trade places in one step (`renameat2` with `RENAME_EXCHANGE`), so a process reading the
/// cache at that moment (another `verify`, a `serve` sharing the directory) finds the old
/// cache or the new one, never none. Where the exchange is not available (another kernel, a
/// file system without it) two renames do it: the old cache is moved aside first, so a reader
/// may briefly find none; a cache is never a mixture of the two either way.
pub(super) fn swap_in(staging: &Path, final_dir: &Path) -> io::Result<()> {
    if final_dir.is_dir() && exchange(staging, final_dir)? {
        // `staging` now holds the old cache.
        let _ = std::fs::remove_dir_all(staging);
        return Ok(());
    }
    two_renames(staging, final_dir)
}

/// Exchange two directories atomically; false when the kernel or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Exchange two directories atomically: not on this platform.
#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<bool> {
    Ok(false)
}

/// `final_dir` moved aside, `staging` renamed into its place (the old one put back if that
/// fails), the old one removed.
fn two_renames(staging: &Path, final_dir: &Path) -> io::Result<()> {
    let mut old = staging.as_os_str().to_owned();
    old.push(".old");
    let old = PathBuf::from(old);
    let had_old = final_dir.is_dir();
    if had_old {
        std::fs::rename(final_dir, &old)?;
    }
    if let Err(e) = std::fs::rename(staging, final_dir) {
        if had_old {
            let _ = std::fs::rename(&old, final_dir);
        }
        return Err(e);
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A reader that keeps looking at the cache while it is replaced again and again never
    /// finds it missing, and always finds one whole version (both files of one swap).
    #[test]
    fn a_reader_never_finds_the_cache_missing_while_it_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("corp-0");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("timestamp.json"), "0").unwrap();
        let done = AtomicBool::new(false);
        let (reads, missing) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    reads.fetch_add(1, Ordering::Relaxed);
                    if std::fs::read(cache.join("timestamp.json")).is_err() {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            for version in 1..=500 {
                let staging = staging_dir(root.path(), &cache).unwrap();
                assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1);
                std::fs::write(staging.join("timestamp.json"), version.to_string()).unwrap();
                swap_in(&staging, &cache).unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });
        assert_eq!(
            std::fs::read_to_string(cache.join("timestamp.json")).unwrap(),
            "500"
        );
        // Only the cache is left: no staging or old directory.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        assert!(reads.load(Ordering::Relaxed) > 0);
        assert_eq!(missing.load(Ordering::Relaxed), 0, "of {reads:?} reads");
    }

    #[test]
    fn a_first_cache_is_renamed_into_place() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("corp-0");
        let staging = staging_dir(root.path(), &cache).unwrap();
        std::fs::write(staging.join("timestamp.json"), "1").unwrap();
        swap_in(&staging, &cache).unwrap();
        assert_eq!(
            std::fs::read_to_string(cache.join("timestamp.json")).unwrap(),
            "1"
        );
        assert!(!staging.exists());
    }
}
