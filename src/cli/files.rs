//! What the command line reads and writes itself: the files and standard input it is given
//! (manifests, keys, credentials), the key password, new key files. Nothing here parses them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::CliError;

/// The text of `path`; `what` names it in the error.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("{what} {}: cannot read", path.display()),
        source,
    })
}

/// Most bytes and files read by `--manifests`.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const MAX_MANIFEST_FILES: usize = 10_000;

/// (label, text) of every manifest file given: files, directories walked for *.yaml, *.yml and
/// *.json (hidden entries skipped, symbolic links to directories not followed), `-` for stdin.
pub(crate) fn read_manifests(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, CliError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let too_much = || {
        CliError::Usage(format!(
            "--manifests: more than {MAX_MANIFEST_FILES} files or {MAX_MANIFEST_BYTES} bytes"
        ))
    };
    let mut add = |label: PathBuf, text: String| -> Result<(), CliError> {
        total += text.len() as u64;
        if total > MAX_MANIFEST_BYTES || files.len() >= MAX_MANIFEST_FILES {
            return Err(too_much());
        }
        files.push((label, text));
        Ok(())
    };
    for p in paths {
        if p.as_os_str() == "-" {
            use std::io::Read as _;
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|source| CliError::Io {
                    what: "--manifests -: cannot read standard input".into(),
                    source,
                })?;
            add(PathBuf::from("<stdin>"), text)?;
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| CliError::Io {
            what: format!("--manifests {}: cannot read", p.display()),
            source,
        })?;
        if meta.is_file() {
            add(p.clone(), read_file(p, "--manifests")?)?;
            continue;
        }
        let mut stack = vec![(p.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|source| CliError::Io {
                    what: format!("--manifests {}: cannot read the directory", dir.display()),
                    source,
                })?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if depth < 32 {
                        stack.push((path, depth + 1));
                    }
                } else if (ft.is_file() || ft.is_symlink())
                    && [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x))
                {
                    add(path.clone(), read_file(&path, "--manifests")?)?;
                }
            }
        }
    }
    Ok(files)
}

/// The text of `--registry-creds-file FILE` (`-`: standard input) and the origin its errors name.
pub(crate) fn read_creds_file(f: &Path) -> Result<(String, String), CliError> {
    if f.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map_err(
            |source| CliError::Io {
                what: "--registry-creds-file -: cannot read stdin".into(),
                source,
            },
        )?;
        Ok((text, "--registry-creds-file - (stdin)".to_string()))
    } else {
        let origin = format!("--registry-creds-file {}", f.display());
        let text = std::fs::read_to_string(f).map_err(|source| CliError::Io {
            what: format!("{origin}: cannot read"),
            source,
        })?;
        Ok((text, origin))
    }
}

/// The bytes of `path` (`-`: standard input), at most `max`; `what` names it in errors.
pub(crate) fn read_bounded(path: &Path, what: &str, max: usize) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    let origin = if path.as_os_str() == "-" {
        format!("{what} - (stdin)")
    } else {
        format!("{what} {}", path.display())
    };
    let io = |source| CliError::Io {
        what: format!("{origin}: cannot read"),
        source,
    };
    let reader: Box<dyn std::io::Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(io)?)
    };
    let mut data = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() > max {
        return Err(CliError::Usage(format!(
            "{origin}: larger than {max} bytes"
        )));
    }
    Ok(data)
}

/// The key password: OCIGATE_PASSWORD, then COSIGN_PASSWORD, else asked on the terminal.
pub(crate) fn password(confirm: bool) -> Result<Zeroizing<String>, CliError> {
    for var in ["OCIGATE_PASSWORD", "COSIGN_PASSWORD"] {
        if let Ok(p) = std::env::var(var) {
            return Ok(Zeroizing::new(p));
        }
    }
    let no_tty = |source| CliError::Io {
        what: "no password: set OCIGATE_PASSWORD (or COSIGN_PASSWORD), or run on a terminal".into(),
        source,
    };
    let p = Zeroizing::new(
        rpassword::prompt_password("Enter password for private key: ").map_err(no_tty)?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Enter password for private key again: ").map_err(no_tty)?,
        );
        if *again != *p {
            return Err(CliError::Usage("passwords do not match".into()));
        }
    }
    Ok(p)
}

/// Write `data` to `path` as a new file with `mode`: written to a fresh temporary file in the
/// same directory (created exclusively, so no symlink is followed and no one else's file is
/// opened), then linked into place — refusing an existing path, or with `replace` renaming
/// over it (a symlink there is replaced, never followed, and the old file's mode is not kept).
pub(crate) fn write_new_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CliError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = None;
    for attempt in 0..16u32 {
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).map_err(|_| CliError::Io {
            what: "no randomness for a temporary file name".into(),
            source: std::io::Error::other("aws-lc-rs rand"),
        })?;
        let candidate = dir.join(format!(".{name}.{}.tmp", hex::encode(rnd)));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&candidate)
        {
            Ok(f) => {
                tmp = Some((candidate, f));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 15 => {}
            Err(e) => return Err(io(e)),
        }
    }
    let Some((tmp_path, mut f)) = tmp else {
        return Err(io(std::io::Error::other("no free temporary file name")));
    };
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            if replace {
                std::fs::rename(&tmp_path, path)
            } else {
                std::fs::hard_link(&tmp_path, path).and_then(|()| std::fs::remove_file(&tmp_path))
            }
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(io(e));
    }
    Ok(())
}
