//! Builds the shipped example: an OCI image layout at `examples/signed-layout` holding a tiny
//! image signed with `keys-example/cosign.key` (password `ocigate-example`).
//!
//!     cargo run --example make_example
//!
//! The key pair itself was made with
//!     OCIGATE_PASSWORD=ocigate-example cargo run -- generate-key-pair --output-key-prefix keys-example/cosign
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ocigate::reference::{Digest, ImageRef};
use ocigate::registry::{
    Descriptor, ImageManifest, OCI_MANIFEST, Registry, RegistrySettings, init_layout,
};
use ocigate::sign::key::SigningKey;

const LAYOUT: &str = "examples/signed-layout";
const PASSWORD: &str = "ocigate-example";

/// A one-file ustar archive.
fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn desc(media_type: &str, d: &Digest, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: d.to_string(),
        size: size as u64,
        annotations: None,
        artifact_type: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root)?;
    if Path::new(LAYOUT).exists() {
        std::fs::remove_dir_all(LAYOUT)?;
    }
    init_layout(Path::new(LAYOUT))?;
    let registry = Registry::new(RegistrySettings::default());
    let image = ImageRef::parse(&format!("oci-layout:{LAYOUT}:v1"))?;

    let layer = tar_with("hello.txt", b"hello from ocigate\n");
    let layer_digest = registry.put_blob(&image, &layer).await?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = registry.put_blob(&image, config.as_bytes()).await?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Some(desc(
            "application/vnd.oci.image.config.v1+json",
            &config_digest,
            config.len(),
        )),
        layers: vec![desc(
            "application/vnd.oci.image.layer.v1.tar",
            &layer_digest,
            layer.len(),
        )],
        manifests: vec![],
        subject: None,
        annotations: Some(BTreeMap::from([
            (
                "org.opencontainers.image.source".to_string(),
                "https://example.com/acme/hello".to_string(),
            ),
            (
                "org.opencontainers.image.revision".to_string(),
                "v1@sha1:0123456789abcdef0123456789abcdef01234567".to_string(),
            ),
        ])),
    };
    registry
        .put_manifest(&image, &serde_json::to_vec_pretty(&manifest)?, OCI_MANIFEST)
        .await?;

    let pem = std::fs::read_to_string("keys-example/cosign.key")?;
    let key = SigningKey::from_encrypted_pem(&pem, PASSWORD.as_bytes(), "keys-example/cosign.key")?;
    let signed = ocigate::sign::sign(&registry, &key, &image, &BTreeMap::new(), None).await?;
    println!(
        "wrote {LAYOUT}: {} signed, {}",
        signed.digest, signed.stored_at
    );
    Ok(())
}
