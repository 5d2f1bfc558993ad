//! Auth tokens, as etcd's `--auth-token` makes them.
//!
//! - `simple` (the default): a random string this member remembers. It is
//!   valid only on the member that issued it, for `--auth-token-ttl` after
//!   its last use, and no longer once its user is deleted or changes
//!   password (the hash it was issued against is kept with it). A client
//!   told "invalid auth token" authenticates again, as etcd's do.
//! - `jwt,pub-key=F,priv-key=F,sign-method=M[,ttl=D]`: a signed token any
//!   member holding the key verifies, carrying the user, the auth revision
//!   it was issued at, and its expiry (etcd's claims). A token older than
//!   the auth store's revision is answered "revision of auth store is old".

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::AuthError;

/// etcd's default `--auth-token-ttl` (seconds) for simple tokens.
pub const DEFAULT_SIMPLE_TTL: Duration = Duration::from_secs(300);
/// etcd's default `ttl` of JWT tokens.
const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);
/// Simple tokens this member keeps at most; the oldest go first.
const MAX_SIMPLE_TOKENS: usize = 100_000;

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user: String,
    /// The auth revision it stands for (a simple token: the current one).
    pub revision: Option<u64>,
}

/// What `--auth-token` asks for.
#[derive(Clone)]
pub enum TokenKind {
    Simple,
    Jwt(Arc<JwtKeys>),
}

impl std::fmt::Debug for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenKind::Simple => f.write_str("simple"),
            TokenKind::Jwt(keys) => write!(f, "jwt({:?}, ttl {:?})", keys.algorithm, keys.ttl),
        }
    }
}

pub struct JwtKeys {
    algorithm: Algorithm,
    /// Absent: this member verifies tokens but cannot issue them.
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

impl TokenKind {
    /// Parses `--auth-token`, reading any key files now.
    pub fn parse(spec: &str) -> Result<TokenKind, String> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or_default() {
            "simple" if spec == "simple" => Ok(TokenKind::Simple),
            "jwt" => {
                let mut options = HashMap::new();
                for part in parts {
                    let (k, v) = part.split_once('=').ok_or_else(|| format!("`{part}` is not key=value"))?;
                    options.insert(k, v);
                }
                JwtKeys::from_options(&options).map(|keys| TokenKind::Jwt(Arc::new(keys)))
            }
            _ => Err(format!("`{spec}` is neither `simple` nor `jwt,pub-key=...,priv-key=...,sign-method=...`")),
        }
    }
}

fn read_key(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("cannot read {path}: {e}"))
}

impl JwtKeys {
    fn from_options(options: &HashMap<&str, &str>) -> Result<JwtKeys, String> {
        let method = options.get("sign-method").ok_or("jwt needs sign-method=")?;
        let algorithm: Algorithm = method.parse().map_err(|_| format!("unknown sign-method `{method}`"))?;
        let ttl = match options.get("ttl") {
            Some(t) => crate::server::compactor::parse_duration(t)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("ttl `{t}` is not a positive duration such as 5m"))?,
            None => DEFAULT_JWT_TTL,
        };
        let bad = |what: &str, e: jsonwebtoken::errors::Error| format!("{what}: {e}");
        let (signing, verifying) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = read_key(options.get("priv-key").ok_or("an HMAC sign-method needs priv-key=")?)?;
                (Some(EncodingKey::from_secret(&secret)), DecodingKey::from_secret(&secret))
            }
            _ => {
                let public = read_key(options.get("pub-key").ok_or("jwt needs pub-key=")?)?;
                let private = options.get("priv-key").map(|p| read_key(p)).transpose()?;
                let (signing, verifying) = match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => (
                        private.map(|k| EncodingKey::from_ec_pem(&k)).transpose().map_err(|e| bad("priv-key", e))?,
                        DecodingKey::from_ec_pem(&public).map_err(|e| bad("pub-key", e))?,
                    ),
                    Algorithm::EdDSA => (
                        private.map(|k| EncodingKey::from_ed_pem(&k)).transpose().map_err(|e| bad("priv-key", e))?,
                        DecodingKey::from_ed_pem(&public).map_err(|e| bad("pub-key", e))?,
                    ),
                    _ => (
                        private.map(|k| EncodingKey::from_rsa_pem(&k)).transpose().map_err(|e| bad("priv-key", e))?,
                        DecodingKey::from_rsa_pem(&public).map_err(|e| bad("pub-key", e))?,
                    ),
                };
                (signing, verifying)
            }
        };
        Ok(JwtKeys { algorithm, signing, verifying, ttl })
    }

    fn issue(&self, user: &str, revision: u64) -> Result<String, AuthError> {
        let Some(key) = &self.signing else {
            tracing::warn!("a JWT was asked for, but --auth-token gives no priv-key to sign it with");
            return Err(AuthError::AuthFailed);
        };
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + self.ttl;
        let claims = Claims { username: user.to_owned(), revision, exp: exp.as_secs() };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| {
            tracing::warn!("signing a JWT failed: {e}");
            AuthError::AuthFailed
        })
    }

    fn verify(&self, token: &str) -> Result<TokenInfo, AuthError> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation).map_err(|_| AuthError::InvalidToken)?;
        Ok(TokenInfo { user: data.claims.username, revision: Some(data.claims.revision) })
    }
}

struct Simple {
    user: String,
    /// The password hash the user had when the token was issued.
    password: bytes::Bytes,
    expires: Instant,
}

/// Issues and checks this member's tokens.
pub struct Tokens {
    kind: TokenKind,
    simple_ttl: Duration,
    simple: Mutex<HashMap<String, Simple>>,
}

impl Tokens {
    pub fn new(kind: TokenKind, simple_ttl: Duration) -> Tokens {
        Tokens { kind, simple_ttl, simple: Mutex::default() }
    }

    /// A new token for `user` (whose password hash is `password`), at auth
    /// revision `revision`.
    pub fn issue(&self, user: &str, password: &bytes::Bytes, revision: u64) -> Result<String, AuthError> {
        match &self.kind {
            TokenKind::Jwt(keys) => keys.issue(user, revision),
            TokenKind::Simple => {
                let token = format!("{}.{}", random_letters(16), revision);
                let now = Instant::now();
                let mut table = self.simple.lock().expect("token table lock");
                table.retain(|_, t| t.expires > now);
                if table.len() >= MAX_SIMPLE_TOKENS
                    && let Some(oldest) = table.iter().min_by_key(|(_, t)| t.expires).map(|(k, _)| k.clone())
                {
                    table.remove(&oldest);
                }
                let entry =
                    Simple { user: user.to_owned(), password: password.clone(), expires: now + self.simple_ttl };
                table.insert(token.clone(), entry);
                Ok(token)
            }
        }
    }

    /// Who `token` names. `password_of` gives a user's current password
    /// hash (None: no such user), against which a simple token is checked.
    pub fn verify(
        &self,
        token: &str,
        password_of: impl Fn(&str) -> Option<bytes::Bytes>,
    ) -> Result<TokenInfo, AuthError> {
        match &self.kind {
            TokenKind::Jwt(keys) => keys.verify(token),
            TokenKind::Simple => {
                let now = Instant::now();
                let mut table = self.simple.lock().expect("token table lock");
                let Some(entry) = table.get_mut(token) else { return Err(AuthError::InvalidToken) };
                if entry.expires <= now || password_of(&entry.user).as_ref() != Some(&entry.password) {
                    table.remove(token);
                    return Err(AuthError::InvalidToken);
                }
                // As etcd: a simple token lives on while it is used.
                entry.expires = now + self.simple_ttl;
                Ok(TokenInfo { user: entry.user.clone(), revision: None })
            }
        }
    }
}

/// `n` random letters from the system's secure source.
fn random_letters(n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = vec![0u8; n];
    crate::tls::provider().secure_random.fill(&mut bytes).expect("the system's random source works");
    // 256 is not a multiple of 52: the slight bias leaves ~5.6 bits a letter.
    bytes.iter().map(|b| LETTERS[*b as usize % LETTERS.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(s: &str) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_simple_token_names_its_user_until_the_password_changes() {
        let tokens = Tokens::new(TokenKind::Simple, DEFAULT_SIMPLE_TTL);
        let token = tokens.issue("app", &hash("h1"), 7).unwrap();
        let info = tokens.verify(&token, |_| Some(hash("h1"))).unwrap();
        assert_eq!(info, TokenInfo { user: "app".into(), revision: None });
        assert_eq!(tokens.verify(&token, |_| Some(hash("h2"))), Err(AuthError::InvalidToken));
        // Once refused, it stays refused.
        assert_eq!(tokens.verify(&token, |_| Some(hash("h1"))), Err(AuthError::InvalidToken));
        assert_eq!(tokens.verify("made.up", |_| Some(hash("h1"))), Err(AuthError::InvalidToken));
    }

    #[test]
    fn a_simple_token_expires_after_its_ttl_without_use() {
        let tokens = Tokens::new(TokenKind::Simple, Duration::ZERO);
        let token = tokens.issue("app", &hash("h"), 1).unwrap();
        assert_eq!(tokens.verify(&token, |_| Some(hash("h"))), Err(AuthError::InvalidToken));
    }

    #[test]
    fn a_deleted_user_s_token_is_invalid() {
        let tokens = Tokens::new(TokenKind::Simple, DEFAULT_SIMPLE_TTL);
        let token = tokens.issue("app", &hash("h"), 1).unwrap();
        assert_eq!(tokens.verify(&token, |_| None), Err(AuthError::InvalidToken));
    }

    #[test]
    fn simple_tokens_are_distinct_and_end_with_the_revision() {
        let tokens = Tokens::new(TokenKind::Simple, DEFAULT_SIMPLE_TTL);
        let a = tokens.issue("app", &hash("h"), 3).unwrap();
        let b = tokens.issue("app", &hash("h"), 3).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with(".3") && a.len() == 18, "{a}");
    }

    #[test]
    fn a_jwt_carries_user_and_revision_and_a_forged_or_expired_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"a shared secret of the cluster").unwrap();
        let spec = format!("jwt,priv-key={},sign-method=HS256,ttl=1h", secret.display());
        let kind = TokenKind::parse(&spec).unwrap();
        let tokens = Tokens::new(kind, DEFAULT_SIMPLE_TTL);
        let token = tokens.issue("app", &hash("h"), 9).unwrap();
        let info = tokens.verify(&token, |_| None).unwrap();
        assert_eq!(info, TokenInfo { user: "app".into(), revision: Some(9) });
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(tokens.verify(&forged, |_| None), Err(AuthError::InvalidToken));
        let TokenKind::Jwt(keys) = TokenKind::parse(&spec).unwrap() else { unreachable!() };
        let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 60;
        let claims = Claims { username: "app".into(), revision: 9, exp: past };
        let expired =
            jsonwebtoken::encode(&Header::new(keys.algorithm), &claims, keys.signing.as_ref().unwrap()).unwrap();
        assert_eq!(tokens.verify(&expired, |_| None), Err(AuthError::InvalidToken));
        assert!(TokenKind::parse(&format!("jwt,priv-key={},sign-method=HS256,ttl=0s", secret.display())).is_err());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(TokenKind::parse("simple").is_ok());
        assert!(TokenKind::parse("paseto").unwrap_err().contains("neither"));
        assert!(TokenKind::parse("jwt,pub-key=x").unwrap_err().contains("sign-method"));
        assert!(TokenKind::parse("jwt,sign-method=RS256,pub-key=/nonexistent").unwrap_err().contains("cannot read"));
    }
}
