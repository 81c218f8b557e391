//! TUF sources, mirrors and the cache: their pure parts, and an update's errors.

use super::*;

#[test]
fn mirrors_are_read_by_form() {
    let base = Path::new("/etc/ocigate");
    assert_eq!(
        TufMirror::parse("https://tuf.corp.example", base).unwrap(),
        TufMirror::Http("https://tuf.corp.example/".into())
    );
    assert_eq!(
        TufMirror::parse("mirror.tar.gz", base).unwrap(),
        TufMirror::Archive(base.join("mirror.tar.gz"))
    );
    assert_eq!(
        TufMirror::parse("/srv/tuf", base).unwrap(),
        TufMirror::Directory("/srv/tuf".into())
    );
    // One spelling of a local mirror, however it was written: one cache.
    for same in ["/srv/tuf/", "/srv/./tuf", "tuf"] {
        assert_eq!(
            TufMirror::parse(same, Path::new("/srv")).unwrap(),
            TufMirror::Directory("/srv/tuf".into()),
            "{same}"
        );
    }
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        TufMirror::parse("mirror/", Path::new("")).unwrap(),
        TufMirror::Directory(cwd.join("mirror"))
    );
    assert!(matches!(
        TufMirror::parse("https://", base),
        Err(TufError::MirrorUrl { .. })
    ));
    assert!(matches!(
        TufMirror::parse("ftp://x/y", base),
        Err(TufError::MirrorScheme { .. })
    ));
}

/// A mirror URL's password goes to the mirror, never into a message: not the mirror's
/// display, not a failed update's error chain (reqwest's errors name their URL).
#[test]
fn a_mirror_password_is_never_said() {
    let text = "http://u:SECRET@127.0.0.1:1/tuf";
    let mirror = TufMirror::parse(text, Path::new("/")).unwrap();
    let shown = mirror.to_string();
    assert!(
        !shown.contains("SECRET") && shown.contains("u:REDACTED@"),
        "{shown}"
    );
    let other = TufMirror::parse("http://u:other@127.0.0.1:1/tuf", Path::new("/")).unwrap();
    let bootstrap = TufSource::builtin("github").unwrap().bootstrap.to_vec();
    let source = TufSource::new("corp", mirror, bootstrap.clone()).unwrap();
    let again = TufSource::new("corp", other, bootstrap).unwrap();
    assert_ne!(
        source.cache_dir(Path::new("")),
        again.cache_dir(Path::new("")),
        "the cache is told apart by the mirror as written"
    );
    let cache = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = http_client(Duration::from_secs(5)).unwrap();
    let e = rt
        .block_on(update(
            &source,
            cache.path(),
            &client,
            Duration::from_secs(5),
        ))
        .unwrap_err();
    let said = crate::error_chain(&e);
    assert!(
        !said.contains("SECRET") && said.contains("REDACTED"),
        "{said}"
    );
}

/// An archive larger than the bound is refused before anything is decompressed (a file of
/// empty deflate blocks expands to nothing, so the expanded bound alone would not end it).
#[test]
fn an_oversized_archive_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.tar.gz");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_ARCHIVE_BYTES + 1).unwrap();
    let e = transport::archive_repository(&path).err().unwrap();
    assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e:?}");
}

#[test]
fn builtins_bootstrap_from_embedded_roots() {
    for n in BUILTIN_TUF_ROOTS {
        let s = TufSource::builtin(n).unwrap();
        assert!(TrustedMetadataSet::from_root(&s.bootstrap).is_ok(), "{n}");
        assert!(s.embedded_snapshot().is_some());
    }
    assert!(TufSource::builtin("corp").is_none());
    let e = TufSource::new("corp", TufMirror::Http("https://x/".into()), b"{}".to_vec());
    assert!(matches!(e, Err(TufError::Bootstrap { .. })));
}

#[test]
fn a_cache_load_checks_the_bootstrap_signatures_first() {
    let genuine = sigstore_trust_root::SigstoreInstance::GitHub
        .tuf_root()
        .to_vec();
    let mut forged: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    forged["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
    let forged = serde_json::to_vec(&forged).unwrap();
    let mirror = || TufMirror::Http("https://tuf.example/".into());
    let cache = tempfile::tempdir().unwrap();
    for (bootstrap, forged) in [(genuine, false), (forged, true)] {
        // Parsed as root metadata when made; signatures are checked where trust starts.
        let s = TufSource::new("corp", mirror(), bootstrap).unwrap();
        assert_eq!(
            matches!(s.check_bootstrap(), Err(TufError::Bootstrap { .. })),
            forged
        );
        let dir = s.cache_dir(cache.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("timestamp.json"), b"{}").unwrap();
        match load_cached(&s, cache.path()) {
            Err(TufError::Bootstrap { .. }) => assert!(forged),
            Err(TufError::Cached { .. }) => assert!(!forged, "the timestamp is garbage"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_cache_is_read_back_under_the_names_sigstore_tuf_asks_for() {
    assert_eq!(
        transport::without_hash_prefix(&format!("{}.trusted_root.json", "a".repeat(64))),
        "trusted_root.json"
    );
    assert_eq!(
        transport::without_hash_prefix(&format!("d/{}.x.json", "0".repeat(128))),
        "d/x.json"
    );
    assert_eq!(
        transport::without_hash_prefix("abc.trusted_root.json"),
        "abc.trusted_root.json"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root_history")).unwrap();
    for (name, body) in [
        ("root_history/2.root.json", "root 2"),
        ("2.root.json", "role 2.root"),
        ("snapshot.json", "snapshot"),
        ("3.targets.json", "targets 3"),
    ] {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let repo = CacheRepository::new(dir.path());
    let get = |name: &str| {
        repo.fetch_metadata(name, 100)
            .now_or_never()
            .unwrap()
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    };
    assert_eq!(get("2.root.json").as_deref(), Some("root 2"));
    assert_eq!(get("3.root.json"), None);
    assert_eq!(get("timestamp.json"), None);
    // Past the root chain, `N.root.json` is a delegated role's file.
    assert_eq!(get("2.root.json").as_deref(), Some("role 2.root"));
    assert_eq!(get("7.snapshot.json").as_deref(), Some("snapshot"));
    assert_eq!(get("3.targets.json").as_deref(), Some("targets 3"));
    let unsafe_path = repo
        .fetch_metadata("../x.json", 100)
        .now_or_never()
        .unwrap();
    assert!(unsafe_path.is_err());
}

#[test]
fn no_cache_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = TufSource::builtin("github").unwrap();
    let e = load_cached(&s, dir.path()).unwrap_err();
    assert!(matches!(e, TufError::NoCache { .. }), "{e}");
    assert!(s.cache_dir(dir.path()).starts_with(dir.path()));
}
