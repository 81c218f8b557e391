//! cosign's encrypted private key format: a PEM block (`ENCRYPTED SIGSTORE PRIVATE KEY`, or
//! `ENCRYPTED COSIGN PRIVATE KEY` from older cosign and skopeo) holding JSON
//! `{"kdf":{"name":"scrypt","params":{"N","r","p"},"salt"},"cipher":{"name":"nacl/secretbox","nonce"},"ciphertext"}`
//! whose plaintext is a PKCS#8 DER private key.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::trust::PublicKey;

/// PEM label of the key files current cosign writes; the one [`encrypt_pkcs8`] writes.
pub const PEM_SIGSTORE: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label of older cosign's and skopeo's key files: read, never written.
pub const PEM_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// The scrypt cost cosign 3 writes (N=2^16, r=8, p=1).
const WRITE_LOG_N: u8 = 16;
/// Refuse costs above this when reading: N=2^20 already needs 1 GiB of memory (at r=8).
const MAX_LOG_N: u8 = 20;
/// The most scrypt work read: memory is 128·r·N bytes and time grows with p·r·N, so a key file
/// may ask for at most what N=2^20, r=8, p=1 asks (1 GiB, about a second), however it spreads it.
const MAX_SCRYPT_WORK: u64 = 8 << 20;

/// A private key that cannot be read or written; Display names the key's origin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateKeyError {
    /// The text (trimmed) does not parse as a PEM block.
    #[error("private key {origin}: not a PEM block")]
    NotPem {
        /// Where the key came from, for messages: the `--key` file path, or `generated`.
        origin: String,
        /// The PEM parser's error.
        #[source]
        source: pem::PemError,
    },
    /// A PEM block with another label, e.g. `PUBLIC KEY` or an unencrypted `PRIVATE KEY`.
    #[error(
        "private key {origin}: PEM block is {found:?}; expected {PEM_SIGSTORE:?} or {PEM_COSIGN:?}"
    )]
    WrongPemTag {
        /// Where the key came from: the `--key` file path.
        origin: String,
        /// The label found.
        found: String,
    },
    /// The block's JSON is not cosign's envelope: unknown or missing fields, bad base64, a
    /// nonce not 24 bytes, a scrypt N that is not a power of two, or N/r/p scrypt refuses.
    #[error("private key {origin}: malformed encrypted key ({detail})")]
    Malformed {
        /// Where the key came from: the `--key` file path.
        origin: String,
        /// What is wrong, e.g. `nonce is 12 bytes, expected 24` or `JSON: ...`.
        detail: String,
    },
    /// cosign's envelope with a `kdf.name` other than `scrypt`, a `cipher.name` other than
    /// `nacl/secretbox`, or a scrypt cost above N=2^20, r=8, p=1 (N above 2^20, or r·p·N above
    /// 8·2^20: memory is 128·r·N bytes).
    #[error("private key {origin}: unsupported {what} {found:?}")]
    Unsupported {
        /// Where the key came from: the `--key` file path.
        origin: String,
        /// `key derivation`, `cipher` or `scrypt cost (more than N=2^20, r=8, p=1)`.
        what: &'static str,
        /// The value found: the kdf or cipher name, or `N=…, r=…, p=…`.
        found: String,
    },
    /// nacl/secretbox (XSalsa20-Poly1305) refused the ciphertext under the scrypt-derived key:
    /// a wrong password, or an altered salt, nonce or ciphertext.
    #[error("private key {origin}: wrong password (or the key file is corrupted)")]
    WrongPassword {
        /// Where the key came from: the `--key` file path.
        origin: String,
    },
    /// The PKCS#8 DER (decrypted, or given to [`SigningKey::from_pkcs8`]) is not an ECDSA
    /// P-256/P-384, Ed25519 or RSA private key.
    #[error(
        "private key {origin}: the decrypted key is not a PKCS#8 ECDSA P-256 or P-384, Ed25519 or RSA key"
    )]
    UnsupportedKey {
        /// Where the key came from: the `--key` file path, or `generated`.
        origin: String,
    },
    /// A step of generating, encrypting or signing failed: the crypto provider, scrypt, or
    /// JSON encoding (from [`encrypt_pkcs8`], also a `log_n` scrypt refuses).
    #[error("private key: the crypto provider failed to {what}")]
    Crypto {
        /// The step: `generate a key`, `sign`, `draw random bytes`, `set scrypt parameters`,
        /// `derive the key`, `encrypt` or `encode the key`.
        what: &'static str,
    },
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

impl Envelope {
    /// The key derivation this envelope asks for, if it is cosign's (scrypt, nacl/secretbox)
    /// at a cost this reader pays (see [`MAX_SCRYPT_WORK`]).
    fn scrypt_params(&self, origin: &str) -> Result<scrypt::Params, PrivateKeyError> {
        let unsupported = |what, found| PrivateKeyError::Unsupported {
            origin: origin.to_string(),
            what,
            found,
        };
        let malformed = |detail| PrivateKeyError::Malformed {
            origin: origin.to_string(),
            detail,
        };
        if self.kdf.name != "scrypt" {
            return Err(unsupported("key derivation", self.kdf.name.clone()));
        }
        if self.cipher.name != "nacl/secretbox" {
            return Err(unsupported("cipher", self.cipher.name.clone()));
        }
        let ScryptParams { n, r, p } = self.kdf.params;
        if !n.is_power_of_two() || n < 2 {
            return Err(malformed(format!(
                "scrypt N={n} is not a power of two of at least 2"
            )));
        }
        let log_n = n.trailing_zeros() as u8;
        let work = u64::from(r).saturating_mul(u64::from(p)).saturating_mul(n);
        if log_n > MAX_LOG_N || work > MAX_SCRYPT_WORK {
            let found = format!("N={n}, r={r}, p={p}");
            return Err(unsupported(
                "scrypt cost (more than N=2^20, r=8, p=1)",
                found,
            ));
        }
        scrypt::Params::new(log_n, r, p, 32)
            .map_err(|e| malformed(format!("scrypt parameters: {e}")))
    }
}

/// A decrypted signing key: ECDSA P-256 (what cosign generates), ECDSA P-384, Ed25519 or RSA
/// (what `cosign import-key-pair` makes of other keys). Each signs as cosign does, which hashes
/// with SHA-256 whatever the key: ECDSA P-256 and P-384 over SHA-256, RSA PKCS#1 v1.5 with
/// SHA-256, Ed25519 over the message itself.
pub struct SigningKey {
    pair: Pair,
    public: PublicKey,
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    /// P-384 signing a SHA-256 digest, as cosign verifies P-384 keys.
    EcdsaP384Sha256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
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

    /// A PKCS#8 DER private key of any supported kind.
    pub fn from_pkcs8(der: &[u8], origin: &str) -> Result<Self, PrivateKeyError> {
        let unsupported = || PrivateKeyError::UnsupportedKey {
            origin: origin.to_string(),
        };
        let (pair, spki) =
            if let Ok(p) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der) {
                let spki = p.public_key().as_der().map_err(|_| unsupported())?;
                (Pair::Ecdsa(p), spki.as_ref().to_vec())
            } else if let Ok(p) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der) {
                let spki = p.public_key().as_der().map_err(|_| unsupported())?;
                (Pair::EcdsaP384Sha256(p), spki.as_ref().to_vec())
            } else if let Ok(p) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                // Go writes PKCS#8 v1 (no public key inside): accepted, as cosign does.
                let spki = p.public_key().as_der().map_err(|_| unsupported())?;
                (Pair::Ed25519(p), spki.as_ref().to_vec())
            } else if let Ok(p) = RsaKeyPair::from_pkcs8(der) {
                let spki = p.public_key().as_der().map_err(|_| unsupported())?;
                (Pair::Rsa(p), spki.as_ref().to_vec())
            } else {
                return Err(unsupported());
            };
        let public = PublicKey::from_der(&spki, origin).map_err(|_| unsupported())?;
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
        let params = env.scrypt_params(origin)?;
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

    /// The public half: what `cosign.pub` holds ([`PublicKey::to_pem`]) and what verifies
    /// this key's signatures.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// A signature over exactly `message`, as cosign makes it with this kind of key (ECDSA as
    /// ASN.1 DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PrivateKeyError> {
        let rng = SystemRandom::new();
        let failed = |_| PrivateKeyError::Crypto { what: "sign" };
        match &self.pair {
            Pair::Ecdsa(p) => p
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(failed),
            Pair::EcdsaP384Sha256(p) => {
                // ECDSA signs the digest as an integer (cut to the curve's 384 bits): the
                // SHA-256 digest behind 16 zero bytes is the same integer as the digest alone,
                // so this is exactly ECDSA P-384 over SHA-256, through the SHA-384 entry point.
                let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                let mut padded = [0u8; 48];
                padded[16..].copy_from_slice(h.as_ref());
                let d = aws_lc_rs::digest::Digest::import_less_safe(
                    &padded,
                    &aws_lc_rs::digest::SHA384,
                )
                .map_err(failed)?;
                p.sign_digest(&d)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(failed)
            }
            Pair::Ed25519(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Rsa(p) => {
                let mut sig = vec![0u8; p.public_modulus_len()];
                p.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
        }
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
        // A small N does not let r or p ask for more: r=2^20 at N=2^10 would be 128 GiB.
        for (n, r, p) in [(1024, 1 << 20, 1), (1 << 16, 8, 1 << 10)] {
            let json = format!(
                r#"{{"kdf":{{"name":"scrypt","params":{{"N":{n},"r":{r},"p":{p}}},"salt":""}},"cipher":{{"name":"nacl/secretbox","nonce":""}},"ciphertext":""}}"#
            );
            let pem = pem::encode(&pem::Pem::new(PEM_COSIGN, json.into_bytes()));
            let e = SigningKey::from_encrypted_pem(&pem, b"", "k").unwrap_err();
            assert!(e.to_string().contains("scrypt cost"), "{e}");
        }
        let json = r#"{"kdf":{"name":"scrypt","params":{"N":1,"r":8,"p":1},"salt":""},"cipher":{"name":"nacl/secretbox","nonce":""},"ciphertext":""}"#;
        let pem = pem::encode(&pem::Pem::new(PEM_COSIGN, json.as_bytes().to_vec()));
        let e = SigningKey::from_encrypted_pem(&pem, b"", "k").unwrap_err();
        assert!(e.to_string().contains("of at least 2"), "{e}");
    }

    #[test]
    fn every_key_kind_cosign_imports_signs_and_verifies() {
        let rng = SystemRandom::new();
        let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let rsa_der =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
        for (name, der) in [
            ("p384", p384.as_ref().to_vec()),
            ("ed25519", ed.as_ref().to_vec()),
            ("rsa", rsa_der.as_ref().to_vec()),
        ] {
            let pem = encrypt_pkcs8(&der, b"pw", 10).unwrap();
            let key = SigningKey::from_encrypted_pem(&pem, b"pw", name).unwrap();
            let sig = key.sign(b"payload").unwrap();
            assert!(key.public_key().verify(b"payload", &sig), "{name}");
            assert!(!key.public_key().verify(b"other", &sig), "{name}");
        }
        let e = SigningKey::from_pkcs8(b"not a key", "junk").unwrap_err();
        assert!(e.to_string().contains("junk"), "{e}");
    }
}
