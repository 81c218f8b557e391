//! The Kubernetes API client's pure parts: paths, kubeconfig, the answer cache.

use super::*;

#[test]
fn object_paths() {
    let r = ObjectRef {
        api_version: None,
        kind: "HelmRepository".into(),
        namespace: None,
        name: "charts".into(),
    };
    assert_eq!(
        object_path(&r, "flux").unwrap(),
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux/helmrepositories/charts"
    );
    let evil = ObjectRef {
        name: "../../secrets/x".into(),
        ..r.clone()
    };
    assert!(object_path(&evil, "flux").is_err());
    let unknown = ObjectRef {
        kind: "Secret".into(),
        ..r.clone()
    };
    assert!(object_path(&unknown, "flux").is_err());
    for name in [".", "..", "a/b", "A", "", "%2e%2e"] {
        let bad = ObjectRef {
            name: name.into(),
            ..r.clone()
        };
        let e = object_path(&bad, "flux").unwrap_err();
        assert!(
            matches!(e, KubeApiError::InvalidName { .. }),
            "{name:?}: {e}"
        );
        assert!(object_path(&r, name).is_err(), "namespace {name:?}");
    }
    assert!(object_path(&r, "flux.x").is_err(), "a namespace is a label");
    let odd_version = ObjectRef {
        api_version: Some("source.toolkit.fluxcd.io/../v1".into()),
        ..r.clone()
    };
    assert!(object_path(&odd_version, "flux").is_err());
}

#[test]
fn kubeconfig_current_context() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:6443\"}\n\
         users:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: x\n  context: {cluster: c, user: u, namespace: team}\ncurrent-context: x\n",
    )
    .unwrap();
    let api = KubeApi::from_kubeconfig(&f).unwrap();
    assert_eq!(api.server, "https://127.0.0.1:6443");
    assert_eq!(api.namespace(), Some("team"));
    assert!(matches!(api.token, Token::Static(ref t) if t == "abc"));
    std::fs::write(&f, "clusters: [").unwrap();
    let e = KubeApi::from_kubeconfig(&f).err().unwrap().to_string();
    assert!(e.contains("config"), "{e}");
    // The text the CLI prints: each layer's words, then its cause.
    let e = crate::error_chain(&KubeApi::from_kubeconfig(&f).err().unwrap());
    let start = format!("kubeconfig {}: not a kubeconfig: ", f.display());
    assert!(e.starts_with(&start), "{e}");
    let e = crate::error_chain(
        &KubeApi::from_kubeconfig(&dir.path().join("none"))
            .err()
            .unwrap(),
    );
    assert!(e.contains("/none: cannot read: No such file"), "{e}");
}

/// "Not found" is believed briefly (it is created any moment), an object longer.
#[test]
fn not_found_is_kept_briefly() {
    use moka::Expiry as _;
    let now = Instant::now();
    let key = String::from("/apis/x");
    let found = Some(serde_json::json!({"kind": "HelmRepository"}));
    assert_eq!(
        ByAnswer.expire_after_create(&key, &None, now),
        Some(NOT_FOUND_TTL)
    );
    assert_eq!(
        ByAnswer.expire_after_create(&key, &found, now),
        Some(FOUND_TTL)
    );
    // An answer that replaces another gets its own lifetime, not the old one's.
    let long = Some(FOUND_TTL);
    assert_eq!(
        ByAnswer.expire_after_update(&key, &None, now, long),
        Some(NOT_FOUND_TTL)
    );
    assert!(NOT_FOUND_TTL <= Duration::from_secs(2));
}

#[test]
fn a_current_context_that_is_not_there_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config");
    std::fs::write(
        &f,
        "clusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:6443\"}\n\
         contexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: gone\n",
    )
    .unwrap();
    let e = crate::error_chain(&KubeApi::from_kubeconfig(&f).err().unwrap());
    assert!(e.contains("current-context \"gone\" is not among"), "{e}");
}

#[test]
fn a_token_goes_over_plain_http_only_to_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config");
    let config = |server: &str, user: &str| {
        format!(
            "clusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\n\
             users:\n- name: u\n  user: {user}\n\
             contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        )
    };
    for (server, user, refused) in [
        ("http://api.example:8080", "{token: abc}", true),
        ("http://10.0.0.1:8080", "{tokenFile: /t}", true),
        ("http://api.example:8080", "{}", false),
        ("http://127.0.0.1:8080", "{token: abc}", false),
        ("http://[::1]:8080", "{token: abc}", false),
        ("http://localhost:8080", "{token: abc}", false),
        ("https://api.example:6443", "{token: abc}", false),
    ] {
        std::fs::write(&f, config(server, user)).unwrap();
        let got = KubeApi::from_kubeconfig(&f);
        assert_eq!(got.is_err(), refused, "{server} {user}");
        if let Err(e) = got {
            assert!(crate::error_chain(&e).contains("plain HTTP"), "{e}");
        }
    }
}

/// The answers cached at once weigh at most [`CACHE_BYTES`], however large each is.
#[test]
fn the_answer_cache_is_bounded_in_bytes() {
    let api = KubeApi::new("https://127.0.0.1:6443".into(), None, Token::None).unwrap();
    let big = serde_json::json!({"data": "x".repeat(1 << 20)});
    assert!(cache_weight("/p", &Some(big.clone())) > 1 << 20);
    for i in 0..64 {
        api.cache.insert(
            format!("/api/v1/namespaces/a/secrets/s{i}"),
            Some(big.clone()),
        );
    }
    api.cache.run_pending_tasks();
    assert!(
        api.cache.weighted_size() <= CACHE_BYTES,
        "{} > {CACHE_BYTES}",
        api.cache.weighted_size()
    );
    assert!(api.cache.entry_count() < 64);
}
