//! Participant authentication with Jitsi-compatible JWTs: HS256 with an app secret, or
//! RS256/ES256 with public keys (PEM files or a JWKS file such as a Keycloak realm
//! publishes). Checks `iss`, `aud`, `sub`, `room`, `exp` and `nbf` (with a small
//! leeway) and reads the user from `context.user`. Every refusal has its own reason.
//! Also mints HS256 tokens (`viaduct-control token`, and dev mode's demo page).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How participants authenticate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens signed with the configured secret or keys.
    #[default]
    Jwt,
    /// For trying Viaduct on one machine: the demo page fetches tokens from
    /// `/dev/token` without any secret. Refused unless the API listens on loopback.
    Dev,
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Jwt => "jwt",
            Self::Dev => "dev",
        })
    }
}

/// The `[jwt]` settings, as Jitsi's token authentication names them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JwtSettings {
    /// The application id: tokens' `iss` must be this (or one of `accepted-issuers`).
    pub app_id: Option<String>,
    /// The HS256 secret.
    pub app_secret: Option<String>,
    /// PEM public keys (RSA for RS256, EC P-256 for ES256).
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`).
    pub jwks_file: Option<PathBuf>,
    /// Issuers accepted besides `app-id`.
    #[serde(default)]
    pub accepted_issuers: Vec<String>,
    /// Accepted `aud` values (default `["jitsi"]`; `"*"` accepts any).
    pub accepted_audiences: Option<Vec<String>>,
    /// If set, `sub` must be this or `*` (Jitsi's domain or tenant).
    pub accepted_subject: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (default 10).
    pub leeway_s: Option<u64>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token at all.
    #[error("no token: pass ?token= or an Authorization: Bearer header")]
    Missing,
    /// Not three base64url parts with a JSON header.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are refused")]
    AlgNone,
    /// An algorithm no configured key uses.
    #[error("algorithm {0} does not match any configured key")]
    WrongAlgorithm(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the app id.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is not accepted.
    #[error("wrong audience")]
    WrongAudience,
    /// `sub` is not the configured domain/tenant.
    #[error("wrong subject")]
    WrongSubject,
    /// The token is for another room.
    #[error("token is for room {token:?}, not {wanted:?}")]
    RoomMismatch {
        /// The token's `room`.
        token: String,
        /// The room asked for.
        wanted: String,
    },
    /// No room in the token and none asked for, or an invalid room name.
    #[error("{0}")]
    BadRoom(String),
}

impl AuthError {
    /// Whether the refusal is about permission (403) rather than identity (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::RoomMismatch { .. } | Self::WrongSubject | Self::BadRoom(_)
        )
    }

    /// A short machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed(_) => "malformed_token",
            Self::AlgNone => "alg_none",
            Self::WrongAlgorithm(_) => "wrong_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongSubject => "wrong_subject",
            Self::RoomMismatch { .. } => "room_mismatch",
            Self::BadRoom(_) => "bad_room",
        }
    }
}

/// A key set that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable key.
    #[error("{path}: {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Nothing to verify with.
    #[error("jwt auth needs jwt.app-secret, jwt.public-keys or jwt.jwks-file (or --auth dev)")]
    NoKeys,
    /// HS256 without an app id.
    #[error("jwt.app-id is required (tokens' iss)")]
    NoAppId,
}

/// Who a verified token says the participant is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `context.user.id`.
    pub user_id: Option<String>,
    /// `context.user.name`.
    pub name: Option<String>,
    /// `context.user.email`.
    pub email: Option<String>,
    /// `context.user.avatar`.
    pub avatar: Option<String>,
    /// `context.user.moderator` or top-level `moderator`.
    pub moderator: bool,
    /// The room the token admits to (lower-case).
    pub room: String,
    /// `context.features`, as given.
    pub features: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    moderator: Option<Value>,
    #[serde(default)]
    context: Option<ContextClaim>,
}

#[derive(Debug, Default, Deserialize)]
struct ContextClaim {
    #[serde(default)]
    user: Option<UserClaim>,
    #[serde(default)]
    features: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct UserClaim {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    avatar: Option<String>,
    #[serde(default)]
    moderator: Option<Value>,
}

/// `true`, `"true"`: Jitsi tokens carry both.
fn truthy(v: &Option<Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies participants' tokens.
pub struct Verifier {
    keys: Vec<Key>,
    issuers: Vec<String>,
    audiences: Option<Vec<String>>,
    subject: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

/// Lower-cases and checks a room name: 1–128 of `[a-z0-9._-]`.
pub fn normalize_room(room: &str) -> Result<String, AuthError> {
    let room = room.trim().to_ascii_lowercase();
    if room.is_empty() || room.len() > 128 {
        return Err(AuthError::BadRoom("room names are 1-128 characters".into()));
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(AuthError::BadRoom(
            "room names use letters, digits, '.', '_' and '-'".into(),
        ));
    }
    Ok(room)
}

impl Verifier {
    /// Loads the keys the settings name.
    pub fn new(settings: &JwtSettings) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.app_secret {
            if settings.app_id.is_none() {
                return Err(KeyError::NoAppId);
            }
            keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        for path in &settings.public_keys {
            keys.push(pem_key(path)?);
        }
        if let Some(path) = &settings.jwks_file {
            keys.extend(jwks_keys(path)?);
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let mut issuers: Vec<String> = settings.app_id.iter().cloned().collect();
        issuers.extend(settings.accepted_issuers.iter().cloned());
        let audiences = settings
            .accepted_audiences
            .clone()
            .unwrap_or_else(|| vec!["jitsi".into()]);
        let audiences = (!audiences.iter().any(|a| a == "*")).then_some(audiences);
        Ok(Self {
            keys,
            issuers,
            audiences,
            subject: settings.accepted_subject.clone(),
            leeway: settings.leeway_s.unwrap_or(10),
        })
    }

    /// Verifies `token` for `room` (or, with no room asked for, the token's own room).
    pub fn verify(&self, token: &str, room: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let alg = header_alg(token)?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| format!("{:?}", k.alg) == alg)
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::WrongAlgorithm(alg));
        }
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Malformed(e.to_string()))?
            .kid;
        let mut validation = Validation::new(candidates[0].alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
        }
        match &self.audiences {
            Some(a) => validation.set_audience(a),
            None => validation.validate_aud = false,
        }
        let mut last = AuthError::BadSignature;
        for key in candidates {
            if let (Some(want), Some(have)) = (&kid, &key.kid) {
                if want != have {
                    continue;
                }
            }
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return self.identity(data.claims, room),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                        ErrorKind::InvalidAudience => AuthError::WrongAudience,
                        ErrorKind::MissingRequiredClaim(c) => {
                            AuthError::Malformed(format!("missing claim {c}"))
                        }
                        _ => AuthError::Malformed(e.to_string()),
                    };
                    // Only a bad signature may succeed with another key.
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn identity(&self, claims: Claims, room: Option<&str>) -> Result<Identity, AuthError> {
        if let Some(want) = &self.subject {
            match claims.sub.as_deref() {
                Some("*") => {}
                Some(s) if s.eq_ignore_ascii_case(want) => {}
                _ => return Err(AuthError::WrongSubject),
            }
        }
        let token_room = claims.room.as_deref().map(str::trim).unwrap_or("");
        let room = match (token_room, room) {
            ("*", Some(r)) => normalize_room(r)?,
            ("*" | "", None) => {
                return Err(AuthError::BadRoom(
                    "the token names no room: pass ?room=".into(),
                ))
            }
            ("", Some(_)) => {
                return Err(AuthError::BadRoom("the token names no room".into()));
            }
            (t, None) => normalize_room(t)?,
            (t, Some(r)) => {
                let (t, r) = (normalize_room(t)?, normalize_room(r)?);
                if t != r {
                    return Err(AuthError::RoomMismatch {
                        token: t,
                        wanted: r,
                    });
                }
                r
            }
        };
        let context = claims.context.unwrap_or_default();
        let user = context.user.unwrap_or_default();
        Ok(Identity {
            user_id: user.id.map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            }),
            name: user.name,
            email: user.email,
            avatar: user.avatar,
            moderator: truthy(&user.moderator) || truthy(&claims.moderator),
            room,
            features: context.features,
        })
    }
}

/// Reads the `alg` of a token's header, refusing `none` by name.
fn header_alg(token: &str) -> Result<String, AuthError> {
    let header = token
        .split('.')
        .next()
        .ok_or_else(|| AuthError::Malformed("no header".into()))?;
    if token.split('.').count() != 3 {
        return Err(AuthError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not JSON".into()))?;
    let alg = json
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Malformed("header has no alg".into()))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgNone);
    }
    Ok(alg.to_owned())
}

fn pem_key(path: &Path) -> Result<Key, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key {
            kid: None,
            alg: Algorithm::RS256,
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok(Key {
            kid: None,
            alg: Algorithm::ES256,
            key,
        });
    }
    Err(KeyError::Bad {
        path: path.to_owned(),
        message: "not an RSA or EC P-256 public key in PEM".into(),
    })
}

fn jwks_keys(path: &Path) -> Result<Vec<Key>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| KeyError::Bad {
        path: path.to_owned(),
        message,
    };
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        use jsonwebtoken::jwk::AlgorithmParameters as P;
        let alg = match &jwk.algorithm {
            P::RSA(_) => Algorithm::RS256,
            P::EllipticCurve(_) => Algorithm::ES256,
            // Symmetric or OKP keys have no place in a public key set here.
            _ => continue,
        };
        // Keys published for encryption only are skipped.
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(bad("no RSA or EC signing keys in the set".into()));
    }
    Ok(keys)
}

/// The service's participant authentication, built once at start.
#[derive(Debug)]
pub struct AuthState {
    /// Verifies tokens; `None` when no keys are configured (nobody can join).
    pub verifier: Option<Verifier>,
    /// In dev mode: the secret `/dev/token` signs with.
    pub dev_secret: Option<String>,
    /// The `iss` of minted tokens.
    pub app_id: String,
}

impl AuthState {
    /// Loads the keys for `mode`. Dev mode signs with `jwt.app-secret` if set, else a
    /// random secret that lives as long as the process.
    pub fn new(mode: AuthMode, jwt: &JwtSettings) -> Result<Self, KeyError> {
        match mode {
            AuthMode::Dev => {
                let mut jwt = jwt.clone();
                let secret = jwt.app_secret.clone().unwrap_or_else(|| {
                    let bytes: [u8; 32] = rand::random();
                    bytes.iter().map(|b| format!("{b:02x}")).collect()
                });
                let app_id = jwt.app_id.clone().unwrap_or_else(|| "viaduct-dev".into());
                jwt.app_secret = Some(secret.clone());
                jwt.app_id = Some(app_id.clone());
                Ok(Self {
                    verifier: Some(Verifier::new(&jwt)?),
                    dev_secret: Some(secret),
                    app_id,
                })
            }
            AuthMode::Jwt => {
                let verifier = match Verifier::new(jwt) {
                    Ok(v) => Some(v),
                    Err(KeyError::NoKeys) => None,
                    Err(e) => return Err(e),
                };
                Ok(Self {
                    verifier,
                    dev_secret: None,
                    app_id: jwt.app_id.clone().unwrap_or_default(),
                })
            }
        }
    }
}

/// What a minted token says.
#[derive(Clone, Debug)]
pub struct Mint<'a> {
    /// `iss`.
    pub app_id: &'a str,
    /// `room`.
    pub room: &'a str,
    /// `context.user.name`.
    pub name: &'a str,
    /// `context.user.moderator`.
    pub moderator: bool,
    /// Lifetime in seconds.
    pub ttl_s: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints an HS256 token as Jitsi's token generators do (`aud: jitsi`, `sub: *`).
pub fn mint(secret: &str, m: &Mint<'_>) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now_s();
    let id: u64 = rand::random();
    let claims = serde_json::json!({
        "iss": m.app_id,
        "aud": "jitsi",
        "sub": "*",
        "room": m.room,
        "iat": now,
        "nbf": now.saturating_sub(5),
        "exp": now + m.ttl_s,
        "moderator": m.moderator,
        "context": {
            "user": {
                "id": format!("{id:016x}"),
                "name": m.name,
                "moderator": m.moderator,
            }
        }
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Parses a duration like `90`, `90s`, `30m`, `2h` or `1d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("bad duration {s:?}"))
}

/// The set of algorithms the configured keys use (for logs).
pub fn algorithms(v: &Verifier) -> HashSet<String> {
    v.keys.iter().map(|k| format!("{:?}", k.alg)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> Verifier {
        Verifier::new(&JwtSettings {
            app_id: Some("app".into()),
            app_secret: Some("s3cret-s3cret".into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn sign(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims() -> Value {
        let now = now_s();
        serde_json::json!({
            "iss": "app", "aud": "jitsi", "sub": "meet.example", "room": "Lobby",
            "exp": now + 600, "nbf": now - 5,
            "context": {"user": {"id": 42, "name": "Ann", "email": "a@example.org",
                                  "avatar": "https://example.org/a.png", "moderator": "true"},
                        "features": {"recording": false}}
        })
    }

    #[test]
    fn accepts_a_jitsi_token_and_reads_the_user() {
        let id = hs().verify(&sign(claims(), "s3cret-s3cret"), None).unwrap();
        assert_eq!(id.room, "lobby");
        assert_eq!(id.user_id.as_deref(), Some("42"));
        assert_eq!(id.name.as_deref(), Some("Ann"));
        assert_eq!(id.email.as_deref(), Some("a@example.org"));
        assert!(id.moderator);
        assert!(id.features.is_some());
        // The room may be asked for in any case.
        assert!(hs()
            .verify(&sign(claims(), "s3cret-s3cret"), Some("LOBBY"))
            .is_ok());
    }

    #[test]
    fn refuses_each_bad_token_with_its_reason() {
        let v = hs();
        let now = now_s();
        let with = |k: &str, val: Value| {
            let mut c = claims();
            c[k] = val;
            sign(c, "s3cret-s3cret")
        };
        assert_eq!(
            v.verify(&sign(claims(), "other-secret"), None),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&with("exp", (now - 60).into()), None),
            Err(AuthError::Expired)
        );
        // Within the leeway is fine.
        assert!(v.verify(&with("exp", (now - 3).into()), None).is_ok());
        assert_eq!(
            v.verify(&with("nbf", (now + 600).into()), None),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&with("iss", "other".into()), None),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            v.verify(&with("aud", "other".into()), None),
            Err(AuthError::WrongAudience)
        );
        assert!(matches!(
            v.verify(&sign(claims(), "s3cret-s3cret"), Some("elsewhere")),
            Err(AuthError::RoomMismatch { .. })
        ));
        // A wildcard room admits to any room, which must then be named.
        let any = with("room", "*".into());
        assert_eq!(v.verify(&any, Some("x")).unwrap().room, "x");
        assert!(matches!(v.verify(&any, None), Err(AuthError::BadRoom(_))));
        assert!(matches!(
            v.verify(&any, Some("bad room!")),
            Err(AuthError::BadRoom(_))
        ));
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            v.verify(&sign(no_exp, "s3cret-s3cret"), None),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(v.verify("", None), Err(AuthError::Missing));
        assert!(matches!(
            v.verify("a.b", None),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            v.verify("!!.??.##", None),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_alg_none_and_foreign_algorithms() {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&claims())
        );
        assert_eq!(hs().verify(&none, None), Err(AuthError::AlgNone));
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "NONE"})),
            b64(&claims())
        );
        assert_eq!(hs().verify(&none, None), Err(AuthError::AlgNone));
        // An RS256 token against an HS256-only verifier: the key decides the algorithm.
        let rs = format!(
            "{}.{}.c2ln",
            b64(&serde_json::json!({"alg": "RS256"})),
            b64(&claims())
        );
        assert!(matches!(
            hs().verify(&rs, None),
            Err(AuthError::WrongAlgorithm(_))
        ));
        // HS384 with the right secret is still refused: HS256 is the secret's algorithm.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims(),
            &EncodingKey::from_secret(b"s3cret-s3cret"),
        )
        .unwrap();
        assert!(matches!(
            hs().verify(&hs384, None),
            Err(AuthError::WrongAlgorithm(_))
        ));
    }

    #[test]
    fn subject_is_checked_when_configured() {
        let v = Verifier::new(&JwtSettings {
            app_id: Some("app".into()),
            app_secret: Some("s3cret-s3cret".into()),
            accepted_subject: Some("meet.example".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(v.verify(&sign(claims(), "s3cret-s3cret"), None).is_ok());
        let mut c = claims();
        c["sub"] = "other.example".into();
        assert_eq!(
            v.verify(&sign(c.clone(), "s3cret-s3cret"), None),
            Err(AuthError::WrongSubject)
        );
        c["sub"] = "*".into();
        assert!(v.verify(&sign(c, "s3cret-s3cret"), None).is_ok());
    }

    #[test]
    fn es256_from_a_pem_file_and_from_jwks() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = std::env::temp_dir().join(format!("viaduct-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("pub.pem");
        std::fs::write(&pem, pair.public_key_pem()).unwrap();
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &enc).unwrap();
        let v = Verifier::new(&JwtSettings {
            app_id: Some("app".into()),
            public_keys: vec![pem.clone()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.verify(&token, None).unwrap().name.as_deref(), Some("Ann"));
        // Signed by another key: bad signature.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc2 = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let forged =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &enc2).unwrap();
        assert_eq!(v.verify(&forged, None), Err(AuthError::BadSignature));
        // An HS256 token against an ES256-only verifier.
        assert!(matches!(
            v.verify(&sign(claims(), "s3cret-s3cret"), None),
            Err(AuthError::WrongAlgorithm(_))
        ));

        // The same public key as a JWKS entry, with a kid, as Keycloak publishes.
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
             "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}
        ]});
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let v = Verifier::new(&JwtSettings {
            app_id: Some("app".into()),
            jwks_file: Some(path),
            ..Default::default()
        })
        .unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(&header, &claims(), &enc).unwrap();
        assert!(v.verify(&token, None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn minted_tokens_verify() {
        let t = mint(
            "s3cret-s3cret",
            &Mint {
                app_id: "app",
                room: "r1",
                name: "Bo",
                moderator: true,
                ttl_s: 60,
            },
        )
        .unwrap();
        let id = hs().verify(&t, Some("r1")).unwrap();
        assert!(id.moderator);
        assert_eq!(id.name.as_deref(), Some("Bo"));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert!(parse_ttl("2w").is_err());
        assert!(parse_ttl("0").is_err());
    }

    #[test]
    fn rs256_from_a_pem_file() {
        // A key pair made for this test only (control/tests/fixtures).
        let private = include_str!("../tests/fixtures/rsa-test-private.pem");
        let public = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rsa-test-public.pem"
        );
        let enc = EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &enc).unwrap();
        let v = Verifier::new(&JwtSettings {
            app_id: Some("app".into()),
            public_keys: vec![PathBuf::from(public)],
            ..Default::default()
        })
        .unwrap();
        assert!(v.verify(&token, Some("lobby")).is_ok());
        // Flip a character in the middle of the signature (the last one may carry
        // only padding bits).
        let sig_at = token.rfind('.').unwrap() + 10;
        let mut tampered = token.clone().into_bytes();
        tampered[sig_at] = if tampered[sig_at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(v.verify(&tampered, None), Err(AuthError::BadSignature));
        // An HS256 token signed with the public key's PEM as the secret (the classic
        // key-confusion attack) is refused by algorithm.
        let confused = sign(claims(), &std::fs::read_to_string(public).unwrap());
        assert!(matches!(
            v.verify(&confused, None),
            Err(AuthError::WrongAlgorithm(_))
        ));
    }
}
