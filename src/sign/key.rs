//! cosign's encrypted private key format: a PEM block (`ENCRYPTED SIGSTORE PRIVATE KEY`, or
//! `ENCRYPTED COSIGN PRIVATE KEY` from older cosign and skopeo) holding JSON
//! `{"kdf":{"name":"scrypt","params":{"N","r","p"},"salt"},"cipher":{"name":"nacl/secretbox","nonce"},"ciphertext"}`
//! whose plaintext is a PKCS#8 DER private key.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::trust::PublicKey;

pub const PEM_SIGSTORE: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
pub const PEM_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// The scrypt cost cosign 3 writes (N=2^16, r=8, p=1).
const WRITE_LOG_N: u8 = 16;
/// Refuse costs above this when reading: N=2^20 already needs 1 GiB of memory.
const MAX_LOG_N: u8 = 20;

/// A private key that cannot be read or written; Display names the key's origin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateKeyError {
    #[error("private key {origin}: not a PEM block")]
    NotPem {
        origin: String,
        #[source]
        source: pem::PemError,
    },
    #[error(
        "private key {origin}: PEM block is {found:?}; expected {PEM_SIGSTORE:?} or {PEM_COSIGN:?}"
    )]
    WrongPemTag { origin: String, found: String },
    #[error("private key {origin}: malformed encrypted key ({detail})")]
    Malformed { origin: String, detail: String },
    #[error("private key {origin}: unsupported {what} {found:?}")]
    Unsupported {
        origin: String,
        what: &'static str,
        found: String,
    },
    #[error("private key {origin}: wrong password (or the key file is corrupted)")]
    WrongPassword { origin: String },
    #[error("private key {origin}: the decrypted key is not an ECDSA P-256 PKCS#8 key")]
    NotP256 { origin: String },
    #[error("private key: the crypto provider failed to {what}")]
    Crypto { what: &'static str },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    name: String,
    nonce: String,
}

/// A decrypted signing key (ECDSA P-256, as cosign generates).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Self, PrivateKeyError> {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(|_| {
                PrivateKeyError::Crypto {
                    what: "generate a key",
                }
            })?;
        Self::from_pkcs8(pkcs8.as_ref(), "generated")
    }

    fn from_pkcs8(der: &[u8], origin: &str) -> Result<Self, PrivateKeyError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der).map_err(|_| {
                PrivateKeyError::NotP256 {
                    origin: origin.to_string(),
                }
            })?;
        let spki = p256_spki(pair.public_key().as_ref());
        let public = PublicKey::from_der(&spki, origin).map_err(|_| PrivateKeyError::NotP256 {
            origin: origin.to_string(),
        })?;
        Ok(SigningKey { pair, public })
    }

    /// Decrypt a cosign/skopeo encrypted private key.
    pub fn from_encrypted_pem(
        pem_text: &str,
        password: &[u8],
        origin: &str,
    ) -> Result<Self, PrivateKeyError> {
        let origin_s = origin.to_string();
        let malformed = |detail: String| PrivateKeyError::Malformed {
            origin: origin_s.clone(),
            detail,
        };
        let block = pem::parse(pem_text.trim()).map_err(|source| PrivateKeyError::NotPem {
            origin: origin.to_string(),
            source,
        })?;
        if block.tag() != PEM_SIGSTORE && block.tag() != PEM_COSIGN {
            return Err(PrivateKeyError::WrongPemTag {
                origin: origin.to_string(),
                found: block.tag().to_string(),
            });
        }
        let env: Envelope = serde_json::from_slice(block.contents())
            .map_err(|e| malformed(format!("JSON: {e}")))?;
        if env.kdf.name != "scrypt" {
            return Err(PrivateKeyError::Unsupported {
                origin: origin.to_string(),
                what: "key derivation",
                found: env.kdf.name,
            });
        }
        if env.cipher.name != "nacl/secretbox" {
            return Err(PrivateKeyError::Unsupported {
                origin: origin.to_string(),
                what: "cipher",
                found: env.cipher.name,
            });
        }
        let n = env.kdf.params.n;
        if !n.is_power_of_two() || n < 2 {
            return Err(malformed(format!("scrypt N={n} is not a power of two")));
        }
        let log_n = n.trailing_zeros() as u8;
        if log_n > MAX_LOG_N {
            return Err(PrivateKeyError::Unsupported {
                origin: origin.to_string(),
                what: "scrypt cost (N above 2^20)",
                found: n.to_string(),
            });
        }
        let salt = B64
            .decode(&env.kdf.salt)
            .map_err(|e| malformed(format!("salt: {e}")))?;
        let nonce = B64
            .decode(&env.cipher.nonce)
            .map_err(|e| malformed(format!("nonce: {e}")))?;
        if nonce.len() != 24 {
            return Err(malformed(format!(
                "nonce is {} bytes, expected 24",
                nonce.len()
            )));
        }
        let ciphertext = B64
            .decode(&env.ciphertext)
            .map_err(|e| malformed(format!("ciphertext: {e}")))?;
        let params = scrypt::Params::new(log_n, env.kdf.params.r, env.kdf.params.p, 32)
            .map_err(|e| malformed(format!("scrypt parameters: {e}")))?;
        let mut key = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(password, &salt, &params, key.as_mut())
            .map_err(|e| malformed(format!("scrypt: {e}")))?;
        let cipher = XSalsa20Poly1305::new(Key::from_slice(key.as_ref()));
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&nonce), ciphertext.as_ref())
                .map_err(|_| PrivateKeyError::WrongPassword {
                    origin: origin.to_string(),
                })?,
        );
        Self::from_pkcs8(&plain, origin)
    }

    /// A fresh P-256 key and its PEM encrypted as cosign 3 writes it
    /// (`ENCRYPTED SIGSTORE PRIVATE KEY`, scrypt N=65536, r=8, p=1).
    pub fn generate_encrypted(password: &[u8]) -> Result<(Self, String), PrivateKeyError> {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(|_| {
                PrivateKeyError::Crypto {
                    what: "generate a key",
                }
            })?;
        let pem = encrypt_pkcs8(pkcs8.as_ref(), password, WRITE_LOG_N)?;
        let key = Self::from_pkcs8(pkcs8.as_ref(), "generated")?;
        Ok((key, pem))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER) over exactly `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PrivateKeyError> {
        let rng = SystemRandom::new();
        self.pair
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| PrivateKeyError::Crypto { what: "sign" })
    }
}

/// Encrypt a PKCS#8 DER private key into cosign's PEM format.
pub fn encrypt_pkcs8(der: &[u8], password: &[u8], log_n: u8) -> Result<String, PrivateKeyError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    rng.fill(&mut salt).map_err(|_| PrivateKeyError::Crypto {
        what: "draw random bytes",
    })?;
    rng.fill(&mut nonce).map_err(|_| PrivateKeyError::Crypto {
        what: "draw random bytes",
    })?;
    let params = scrypt::Params::new(log_n, 8, 1, 32).map_err(|_| PrivateKeyError::Crypto {
        what: "set scrypt parameters",
    })?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, &salt, &params, key.as_mut()).map_err(|_| {
        PrivateKeyError::Crypto {
            what: "derive the key",
        }
    })?;
    let cipher = XSalsa20Poly1305::new(Key::from_slice(key.as_ref()));
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), der)
        .map_err(|_| PrivateKeyError::Crypto { what: "encrypt" })?;
    let env = Envelope {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams {
                n: 1u64 << log_n,
                r: 8,
                p: 1,
            },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(ciphertext),
    };
    let json = serde_json::to_vec(&env).map_err(|_| PrivateKeyError::Crypto {
        what: "encode the key",
    })?;
    Ok(pem::encode(&pem::Pem::new(PEM_SIGSTORE, json)))
}

/// SubjectPublicKeyInfo DER for an uncompressed P-256 point.
fn p256_spki(point: &[u8]) -> Vec<u8> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) point }
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut out = PREFIX.to_vec();
    out.extend_from_slice(point);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_low_cost() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pem = encrypt_pkcs8(pkcs8.as_ref(), b"pw", 10).unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let key = SigningKey::from_encrypted_pem(&pem, b"pw", "t").unwrap();
        let sig = key.sign(b"payload").unwrap();
        assert!(key.public_key().verify(b"payload", &sig));
        assert!(!key.public_key().verify(b"payloaD", &sig));
        let e = SigningKey::from_encrypted_pem(&pem, b"nope", "t.key").unwrap_err();
        assert!(matches!(e, PrivateKeyError::WrongPassword { .. }), "{e}");
        assert!(e.to_string().contains("t.key"));
    }

    #[test]
    fn reads_older_cosign_and_skopeo_label_at_every_cost() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        for log_n in [15u8, 17] {
            let pem = encrypt_pkcs8(pkcs8.as_ref(), b"pw", log_n).unwrap();
            let relabelled = pem.replace(PEM_SIGSTORE, PEM_COSIGN);
            assert!(relabelled.contains("BEGIN ENCRYPTED COSIGN PRIVATE KEY"));
            let key = SigningKey::from_encrypted_pem(&relabelled, b"pw", "old.key").unwrap();
            let sig = key.sign(b"m").unwrap();
            assert!(key.public_key().verify(b"m", &sig), "N=2^{log_n}");
        }
    }

    #[test]
    fn malformed_keys() {
        let cases = [
            ("not pem", "not a PEM"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                "expected",
            ),
            (
                "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----",
                "JSON",
            ),
        ];
        for (input, needle) in cases {
            let e = SigningKey::from_encrypted_pem(input, b"", "k").unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
        let json = r#"{"kdf":{"name":"scrypt","params":{"N":1048577,"r":8,"p":1},"salt":""},"cipher":{"name":"nacl/secretbox","nonce":""},"ciphertext":""}"#;
        let pem = pem::encode(&pem::Pem::new(PEM_COSIGN, json.as_bytes().to_vec()));
        let e = SigningKey::from_encrypted_pem(&pem, b"", "k").unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        let json = r#"{"kdf":{"name":"scrypt","params":{"N":4194304,"r":8,"p":1},"salt":""},"cipher":{"name":"nacl/secretbox","nonce":""},"ciphertext":""}"#;
        let pem = pem::encode(&pem::Pem::new(PEM_COSIGN, json.as_bytes().to_vec()));
        let e = SigningKey::from_encrypted_pem(&pem, b"", "k").unwrap_err();
        assert!(e.to_string().contains("scrypt cost"), "{e}");
    }
}
