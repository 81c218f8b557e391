//! Trust material: public keys (PEM SubjectPublicKeyInfo: ECDSA P-256/P-384, Ed25519, RSA).
//! Parsing only; the key's file is read by the caller.

use sigstore_crypto::{KeyAlgorithm, SigningScheme, VerificationKey};
use sigstore_types::{DerPublicKey, SignatureBytes};

/// A public key that cannot be used; Display names where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("public key {origin}: not a PEM \"PUBLIC KEY\" block")]
    NotPem {
        origin: String,
        #[source]
        source: pem::PemError,
    },
    #[error("public key {origin}: PEM block is {found:?}, expected \"PUBLIC KEY\"")]
    WrongPemTag { origin: String, found: String },
    #[error("public key {origin}: unsupported or malformed key")]
    Unsupported {
        origin: String,
        #[source]
        source: sigstore_crypto::Error,
    },
}

/// A parsed public key, ready to verify signatures.
#[derive(Debug, Clone)]
pub struct PublicKey {
    der: DerPublicKey,
    algorithm: KeyAlgorithm,
}

impl PublicKey {
    /// Parse a PEM `PUBLIC KEY` block. `origin` names the input in errors (a path, a policy key).
    pub fn from_pem(pem_text: &str, origin: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text.trim()).map_err(|source| KeyError::NotPem {
            origin: origin.to_string(),
            source,
        })?;
        if block.tag() != "PUBLIC KEY" {
            return Err(KeyError::WrongPemTag {
                origin: origin.to_string(),
                found: block.tag().to_string(),
            });
        }
        Self::from_der(block.contents(), origin)
    }

    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_der(der: &[u8], origin: &str) -> Result<Self, KeyError> {
        let der = DerPublicKey::new(der.to_vec());
        let algorithm = KeyAlgorithm::from_spki(&der).map_err(|source| KeyError::Unsupported {
            origin: origin.to_string(),
            source,
        })?;
        // Build one verification key now so a malformed point or modulus fails here, not later.
        VerificationKey::from_spki(&der).map_err(|source| KeyError::Unsupported {
            origin: origin.to_string(),
            source,
        })?;
        Ok(PublicKey { der, algorithm })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn der(&self) -> &[u8] {
        self.der.as_bytes()
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// `sha256:<hex>` of the DER key: a stable name for evidence and logs.
    pub fn fingerprint(&self) -> String {
        crate::reference::Digest::sha256_of(self.der.as_bytes()).to_string()
    }

    pub fn to_pem(&self) -> String {
        self.der.to_pem()
    }

    /// Whether `signature` is a valid signature by this key over exactly `message`.
    /// cosign signs with SHA-256 whatever the key type; P-384 signatures made with the curve's
    /// own SHA-384 are accepted too.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let schemes: &[SigningScheme] = match self.algorithm {
            KeyAlgorithm::EcdsaP256 => &[SigningScheme::EcdsaP256Sha256],
            KeyAlgorithm::EcdsaP384 => &[
                SigningScheme::EcdsaP384Sha256,
                SigningScheme::EcdsaP384Sha384,
            ],
            KeyAlgorithm::Ed25519 => &[SigningScheme::Ed25519],
            KeyAlgorithm::Rsa => &[SigningScheme::RsaPkcs1Sha256, SigningScheme::RsaPssSha256],
            _ => &[],
        };
        let sig = SignatureBytes::new(signature.to_vec());
        schemes.iter().any(|scheme| {
            VerificationKey::from_spki_with_scheme(&self.der, *scheme)
                .is_ok_and(|k| k.verify(message, &sig).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEusIAt6EJ3YrTHdg2qkWVS0KuotWQ
wHDtyaXlq7Nhj8279+1u/l5pZhXJPW8PnGRRLdO5NbsuM6aT7pOcP100uw==
-----END PUBLIC KEY-----";

    #[test]
    fn parses_p256() {
        let k = PublicKey::from_pem(P256, "alice").unwrap();
        assert_eq!(k.algorithm(), KeyAlgorithm::EcdsaP256);
        assert!(k.fingerprint().starts_with("sha256:"));
        assert!(!k.verify(b"x", b"not a signature"));
    }

    #[test]
    fn bad_keys_name_their_origin() {
        let e = PublicKey::from_pem("hello", "keys/a.pub").unwrap_err();
        assert!(e.to_string().contains("keys/a.pub"));
        let e = PublicKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "k",
        )
        .unwrap_err();
        assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
        let e = PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "k",
        )
        .unwrap_err();
        assert!(matches!(e, KeyError::Unsupported { .. }), "{e}");
    }
}
