//! The JWT signing secret: read from `auth.jwt_secret_file`, taken from
//! `auth.jwt_secret` (config file or `CP__AUTH__JWT_SECRET`), or — in
//! development only — generated for the run. In production a missing or weak
//! secret refuses start-up.
//!
//! An edge module: it reads the secret file, nothing else. It never logs the
//! secret and never puts it in an error or a warning.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Fewest bytes in a secret accepted in production.
pub const MIN_SECRET_BYTES: usize = 32;
/// Fewest distinct byte values in a secret accepted in production.
const MIN_DISTINCT_BYTES: usize = 10;
/// Bytes generated for a development secret.
const GENERATED_BYTES: usize = 32;
/// Largest secret file read (a secret is a few dozen bytes; this stops a
/// misconfigured path such as `/dev/zero` from filling memory).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Where the secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `auth.jwt_secret`, from the config file or `CP__AUTH__JWT_SECRET`
    /// (the two are merged into one value before this module sees it).
    Value,
    /// The file `auth.jwt_secret_file`.
    File(PathBuf),
    /// Generated for this run (development only; tokens die with the process).
    Generated,
}

/// Names the source as the operator would look for it.
impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Value => f.write_str("auth.jwt_secret (config or CP__AUTH__JWT_SECRET)"),
            SecretSource::File(path) => write!(f, "auth.jwt_secret_file {}", path.display()),
            SecretSource::Generated => f.write_str("a secret generated for this run"),
        }
    }
}

/// Why there is no usable secret. Each renders as one line naming the source
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file cannot be read.
    #[error(
        "auth.jwt_secret_file {}: cannot read it ({error}); check the path and that the service user may read it",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The secret file is empty (or holds only a newline).
    #[error(
        "auth.jwt_secret_file {}: the file is empty; put at least {MIN_SECRET_BYTES} random bytes in it, e.g. `head -c 48 /dev/urandom | base64 > FILE`",
        .0.display()
    )]
    Empty(PathBuf),
    /// The secret file is far larger than any secret.
    #[error(
        "auth.jwt_secret_file {}: larger than {MAX_FILE_BYTES} bytes, not a secret; point it at a file holding only the secret",
        .0.display()
    )]
    TooLarge(PathBuf),
    /// Production without a secret.
    #[error(
        "auth.mode = production needs a JWT secret: set auth.jwt_secret_file (or CP__AUTH__JWT_SECRET) to at least {MIN_SECRET_BYTES} random bytes, e.g. `head -c 48 /dev/urandom | base64`"
    )]
    Missing,
    /// Production with a weak secret.
    #[error(
        "{origin}: auth.mode = production refuses a weak JWT secret ({why}); use at least {MIN_SECRET_BYTES} random bytes, e.g. `head -c 48 /dev/urandom | base64`"
    )]
    Weak {
        /// Where the weak secret came from.
        origin: SecretSource,
        /// What is wrong with it (never the secret itself).
        why: String,
    },
    /// The operating system gave no randomness to generate a secret.
    #[error("cannot generate a JWT secret: no randomness from the operating system ({0})")]
    Random(getrandom::Error),
}

/// Resolves the secret: `file` (read, one trailing newline trimmed) wins over
/// `value` (used when non-empty). Returns the secret, its source, and a
/// warning when development accepted a weak one.
///
/// In production the secret must exist and be strong: at least 32 bytes and
/// at least 10 distinct byte values (which also refuses one byte repeated).
/// In development a missing secret is generated (32 random bytes, source
/// [`SecretSource::Generated`]) and a weak one is accepted with a warning.
/// An unreadable, empty or oversized file is an error in both modes.
pub fn resolve(
    value: &str,
    file: Option<&Path>,
    production: bool,
) -> Result<(Vec<u8>, SecretSource, Option<String>), SecretError> {
    let (secret, source) = match file {
        Some(path) => (read_file(path)?, SecretSource::File(path.to_owned())),
        None if !value.is_empty() => (value.as_bytes().to_vec(), SecretSource::Value),
        None if production => return Err(SecretError::Missing),
        None => {
            let mut secret = vec![0u8; GENERATED_BYTES];
            getrandom::fill(&mut secret).map_err(SecretError::Random)?;
            return Ok((secret, SecretSource::Generated, None));
        }
    };
    match (weakness(&secret), production) {
        (None, _) => Ok((secret, source, None)),
        (Some(why), true) => Err(SecretError::Weak {
            origin: source,
            why,
        }),
        (Some(why), false) => {
            let warning = format!(
                "{source}: weak JWT secret ({why}); accepted in development only, auth.mode = production will refuse it"
            );
            Ok((secret, source, Some(warning)))
        }
    }
}

/// The secret in `path`, without one trailing `\n` or `\r\n`.
fn read_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let read_error = |error| SecretError::Read {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SecretError::TooLarge(path.to_owned()));
    }
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(SecretError::Empty(path.to_owned()));
    }
    Ok(trimmed.to_vec())
}

/// What makes `secret` too weak for production, if anything (a description
/// of its shape, never its content).
fn weakness(secret: &[u8]) -> Option<String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "{} bytes, fewer than {MIN_SECRET_BYTES}",
            secret.len()
        ));
    }
    let mut seen = [false; 256];
    for &b in secret {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    match distinct {
        1 => Some("one byte repeated".into()),
        n if n < MIN_DISTINCT_BYTES => Some(format!(
            "only {n} distinct bytes, fewer than {MIN_DISTINCT_BYTES}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "q8ZC1k-3vVx!a9Lm0Pz7Rt2Yb5Nw4Hs6Ju";

    fn file_with(dir: &tempfile::TempDir, content: &[u8]) -> PathBuf {
        let path = dir.path().join("jwt-secret");
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn production_takes_a_strong_value() {
        let (secret, source, warning) = resolve(STRONG, None, true).unwrap();
        assert_eq!(secret, STRONG.as_bytes());
        assert_eq!(source, SecretSource::Value);
        assert_eq!(warning, None);
    }

    #[test]
    fn production_refuses_a_missing_secret() {
        let err = resolve("", None, true).unwrap_err();
        assert!(matches!(err, SecretError::Missing));
        assert!(err.to_string().contains("auth.jwt_secret_file"), "{err}");
    }

    #[test]
    fn production_refuses_weak_secrets_without_showing_them() {
        let short = "Zq8!x";
        let one_byte = "k".repeat(64);
        let few_bytes = "abcdefghi".repeat(8);
        for weak in [short, one_byte.as_str(), few_bytes.as_str()] {
            let err = resolve(weak, None, true).unwrap_err();
            assert!(
                matches!(
                    &err,
                    SecretError::Weak {
                        origin: SecretSource::Value,
                        ..
                    }
                ),
                "{err}"
            );
            let message = err.to_string();
            assert!(message.contains("auth.jwt_secret"), "{message}");
            assert!(!message.contains(weak), "{message}");
        }
        // 31 bytes is short; 32 with 10 distinct bytes is enough.
        assert!(resolve(&STRONG[..31], None, true).is_err());
        assert!(resolve(&"abcdefghij".repeat(4)[..32], None, true).is_ok());
    }

    #[test]
    fn development_generates_a_missing_secret() {
        let (a, source, warning) = resolve("", None, false).unwrap();
        assert_eq!(
            (a.len(), source, warning),
            (32, SecretSource::Generated, None)
        );
        let (b, _, _) = resolve("", None, false).unwrap();
        assert_ne!(a, b);
        assert_eq!(weakness(&a), None);
    }

    #[test]
    fn development_accepts_a_weak_secret_with_a_warning() {
        let (secret, source, warning) = resolve("Zq8!x", None, false).unwrap();
        assert_eq!(
            (secret.as_slice(), source),
            (b"Zq8!x".as_slice(), SecretSource::Value)
        );
        let warning = warning.unwrap();
        assert!(warning.contains("development only"), "{warning}");
        assert!(!warning.contains("Zq8!x"), "{warning}");
        assert_eq!(resolve(STRONG, None, false).unwrap().2, None);
    }

    #[test]
    fn a_file_wins_over_the_value_and_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (content, expected) in [
            (format!("{STRONG}\n"), STRONG.to_owned()),
            (format!("{STRONG}\r\n"), STRONG.to_owned()),
            (STRONG.to_owned(), STRONG.to_owned()),
            (format!("{STRONG}\n\n"), format!("{STRONG}\n")),
        ] {
            let path = file_with(&dir, content.as_bytes());
            let (secret, source, warning) = resolve("ignored", Some(&path), true).unwrap();
            assert_eq!(secret, expected.as_bytes());
            assert_eq!(source, SecretSource::File(path));
            assert_eq!(warning, None);
        }
    }

    #[test]
    fn a_binary_file_is_taken_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..=255).collect();
        let path = file_with(&dir, &bytes);
        assert_eq!(resolve("", Some(&path), true).unwrap().0, bytes);
    }

    #[test]
    fn a_weak_file_is_refused_in_production_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(&dir, b"changeme\n");
        let err = resolve(STRONG, Some(&path), true).unwrap_err();
        assert!(
            matches!(&err, SecretError::Weak { origin: SecretSource::File(p), .. } if *p == path)
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        let (_, _, warning) = resolve(STRONG, Some(&path), false).unwrap();
        assert!(warning.unwrap().contains(&*path.to_string_lossy()));
    }

    #[test]
    fn an_empty_file_is_refused_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        for content in [&b""[..], b"\n", b"\r\n"] {
            let path = file_with(&dir, content);
            for production in [true, false] {
                let err = resolve(STRONG, Some(&path), production).unwrap_err();
                assert!(matches!(&err, SecretError::Empty(p) if *p == path), "{err}");
                assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
            }
        }
    }

    #[test]
    fn an_unreadable_file_is_refused_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-secret");
        for production in [true, false] {
            let err = resolve(STRONG, Some(&missing), production).unwrap_err();
            assert!(matches!(err, SecretError::Read { .. }), "{err}");
            assert!(err.to_string().contains("no-such-secret"), "{err}");
            // A directory is not a secret either.
            let err = resolve(STRONG, Some(dir.path()), production).unwrap_err();
            assert!(matches!(err, SecretError::Read { .. }), "{err}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(&dir, &vec![b'x'; MAX_FILE_BYTES as usize + 1]);
        let err = resolve("", Some(&path), false).unwrap_err();
        assert!(matches!(err, SecretError::TooLarge(_)), "{err}");
        let path = file_with(&dir, STRONG.repeat(1000).as_bytes());
        assert!(resolve("", Some(&path), true).is_ok());
    }

    #[test]
    fn errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file_with(&dir, b"");
        for err in [
            resolve("", None, true).unwrap_err(),
            resolve("weak", None, true).unwrap_err(),
            resolve("", Some(&empty), true).unwrap_err(),
            resolve("", Some(&dir.path().join("missing")), true).unwrap_err(),
        ] {
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
