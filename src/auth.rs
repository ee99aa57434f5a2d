//! Bearer-token authentication and role checks, as a tower layer in front of every gRPC
//! service. Health and reflection are open; every FineTuneService RPC needs a token whose
//! entry grants the RPC's role:
//!
//! - `read`: ValidateDataset, UploadDataset (the way to validate a large file), GetJob,
//!   ListJobs, WatchJob, ListTiers, GetTierStats;
//! - `train`: StartTraining, CancelJob, PromoteModel;
//! - `complete`: Complete, StreamComplete, RecordFeedback.
//!
//! Tokens are configured as lines `NAME ROLES sha256:HEX` (a file, or the environment): only
//! the SHA-256 of each token is kept, and a presented token is hashed and compared with every
//! entry in constant time. Tokens never reach a log, an error or a Debug output.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use finetune_core::error::Error;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Train,
    Complete,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Train => "train",
            Role::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "train" => Some(Role::Train),
            "complete" => Some(Role::Complete),
            _ => None,
        }
    }
}

/// The authenticated caller, put in each request's extensions.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    roles: Vec<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish()
    }
}

struct Entry {
    caller: Caller,
    hash: [u8; 32],
}

/// The configured tokens (hashes only).
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.caller.name.as_str())
            .collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Parses token lines (`NAME ROLES sha256:HEX`; `#` starts a comment; blank lines and
    /// `;` separate entries). `origin` names the source in errors, which never quote a hash.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, Error> {
        let mut entries: Vec<Entry> = Vec::new();
        let lines = text.lines().flat_map(|l| l.split(';')).enumerate();
        for (i, raw) in lines {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{origin}: entry {}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, roles, hash] = fields[..] else {
                return Err(Error::Config(format!(
                    "{at}: expected `NAME ROLES sha256:HEX` (3 fields), got {}",
                    fields.len()
                )));
            };
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::Config(format!(
                    "{at}: the name may hold letters, digits, '-', '_' and '.' only"
                )));
            }
            let mut parsed = Vec::new();
            for role in roles.split(',') {
                let role = Role::parse(role).ok_or_else(|| {
                    Error::Config(format!(
                        "{at} ({name}): unknown role {role:?}; roles are read, train, complete"
                    ))
                })?;
                if !parsed.contains(&role) {
                    parsed.push(role);
                }
            }
            let hash = hash
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{at} ({name}): the third field must be sha256: and 64 hex digits (`finetune token new` prints one)"
                    ))
                })?;
            if entries.iter().any(|e| e.caller.name == name) {
                return Err(Error::Config(format!(
                    "{at}: the name {name} is used twice"
                )));
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(Error::Config(format!(
                    "{at} ({name}): the same token is already configured under another name"
                )));
            }
            entries.push(Entry {
                caller: Caller {
                    name: name.to_owned(),
                    roles: parsed,
                },
                hash,
            });
        }
        Ok(Tokens { entries })
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read tokens file {}: {e}", path.display()))
        })?;
        Tokens::parse(&text, &path.display().to_string())
    }

    /// Adds the entries of `other`; a name or token configured twice is an error.
    pub fn merge(mut self, other: Tokens) -> Result<Tokens, Error> {
        for entry in other.entries {
            if self
                .entries
                .iter()
                .any(|e| e.caller.name == entry.caller.name || e.hash == entry.hash)
            {
                return Err(Error::Config(format!(
                    "token {} is configured both in the file and in the environment",
                    entry.caller.name
                )));
            }
            self.entries.push(entry);
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The caller a token belongs to. Every entry is compared (in constant time), so the
    /// time taken says nothing about which entry, or how much of one, matched.
    pub fn authenticate(&self, token: &str) -> Option<&Caller> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(&entry.caller);
            }
        }
        found
    }
}

/// A new random token (`ft_` and 64 hex digits, 256 bits) and its configuration line.
pub fn new_token(name: &str, roles: &[Role]) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("ft_{}", hex::encode(bytes));
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let line = format!(
        "{name} {} sha256:{}",
        roles.join(","),
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    (token, line)
}

/// The role an RPC needs, by its path; `None` for the open services (health, reflection).
pub fn required_role(path: &str) -> Option<Role> {
    const SERVICE: &str = "/fileengine.finetune.v1.FineTuneService/";
    let Some(method) = path.strip_prefix(SERVICE) else {
        // Health and reflection are open; anything else (no such service) needs a token
        // like any RPC, so probing for services says nothing to an unknown caller.
        return if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
            None
        } else {
            Some(Role::Read)
        };
    };
    Some(match method {
        "StartTraining" | "CancelJob" | "PromoteModel" => Role::Train,
        "Complete" | "StreamComplete" | "RecordFeedback" => Role::Complete,
        // ValidateDataset, UploadDataset, GetJob, ListJobs, WatchJob, ListTiers,
        // GetTierStats, and any method this version does not know (UNIMPLEMENTED follows).
        _ => Role::Read,
    })
}

/// Checks a request's `authorization` against `tokens`: the caller, or the status to
/// answer with.
pub fn check(
    tokens: &Tokens,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<Caller>, tonic::Status> {
    let Some(role) = required_role(path) else {
        return Ok(None);
    };
    let method = path.rsplit('/').next().unwrap_or(path);
    let Some(value) = authorization else {
        return Err(refusal(
            tonic::Code::Unauthenticated,
            format!("{method} needs a token: send the metadata `authorization: Bearer <token>`"),
            "TOKEN_MISSING",
            method,
            role,
        ));
    };
    let token = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            refusal(
                tonic::Code::Unauthenticated,
                "the authorization metadata must be `Bearer <token>`".to_owned(),
                "TOKEN_MALFORMED",
                method,
                role,
            )
        })?;
    let caller = tokens.authenticate(token).ok_or_else(|| {
        refusal(
            tonic::Code::Unauthenticated,
            "the token is not valid".to_owned(),
            "TOKEN_INVALID",
            method,
            role,
        )
    })?;
    if !caller.has(role) {
        return Err(refusal(
            tonic::Code::PermissionDenied,
            format!(
                "token {} lacks the {} role that {method} needs",
                caller.name,
                role.as_str()
            ),
            "ROLE_MISSING",
            method,
            role,
        ));
    }
    Ok(Some(caller.clone()))
}

/// A refusal with the service's ErrorInfo: the reason, and the method and role concerned.
fn refusal(
    code: tonic::Code,
    message: String,
    reason: &str,
    method: &str,
    role: Role,
) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let metadata = [
        ("method".to_owned(), method.to_owned()),
        ("role".to_owned(), role.as_str().to_owned()),
    ];
    tonic::Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, crate::service::status::ERROR_DOMAIN, metadata),
    )
}

/// The tower layer: with tokens it authenticates every request, without it lets all pass.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl AuthLayer {
    pub fn new(tokens: Option<Arc<Tokens>>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(tokens) = &self.tokens {
            let authorization = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match check(tokens, req.uri().path(), authorization) {
                Ok(Some(caller)) => {
                    req.extensions_mut().insert(caller);
                }
                Ok(None) => {}
                Err(status) => {
                    tracing::info!(path = %req.uri().path(), code = %status.code(), "refused: {}", status.message());
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (Tokens, String, String) {
        let (admin, admin_line) = new_token("admin", &[Role::Read, Role::Train, Role::Complete]);
        let (reader, reader_line) = new_token("dashboard", &[Role::Read]);
        let text = format!("# tokens\n{admin_line}\n\n{reader_line}  # read only\n");
        (Tokens::parse(&text, "test").unwrap(), admin, reader)
    }

    #[test]
    fn tokens_authenticate_by_hash_and_roles_gate_rpcs() {
        let (tokens, admin, reader) = tokens();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.authenticate(&admin).unwrap().name, "admin");
        assert_eq!(tokens.authenticate(&reader).unwrap().name, "dashboard");
        assert!(tokens.authenticate("ft_wrong").is_none());
        assert!(tokens.authenticate(&admin[..admin.len() - 1]).is_none());

        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let train = "/fileengine.finetune.v1.FineTuneService/StartTraining";
        let watch = "/fileengine.finetune.v1.FineTuneService/WatchJob";
        assert_eq!(
            check(&tokens, train, Some(&bearer(&admin)))
                .unwrap()
                .unwrap()
                .name,
            "admin"
        );
        assert!(check(&tokens, watch, Some(&bearer(&reader))).is_ok());
        let denied = check(&tokens, train, Some(&bearer(&reader))).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("dashboard lacks the train role"));
        let missing = check(&tokens, watch, None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let wrong = check(&tokens, watch, Some(b"Bearer ft_nope")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains("ft_nope"), "never echoed");
        let basic = check(&tokens, watch, Some(b"Basic abc")).unwrap_err();
        assert_eq!(basic.code(), tonic::Code::Unauthenticated);
        // Health and reflection are open.
        assert!(matches!(
            check(&tokens, "/grpc.health.v1.Health/Check", None),
            Ok(None)
        ));
        assert!(matches!(
            check(
                &tokens,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            ),
            Ok(None)
        ));
        assert!(check(&tokens, "/other.Service/Method", None).is_err());
    }

    #[test]
    fn bad_token_lines_say_where_and_why_without_quoting_hashes() {
        let bad = [
            ("a read", "3 fields"),
            ("a write sha256:00", "unknown role"),
            ("a read sha256:xyz", "64 hex digits"),
            ("a/b read sha256:00", "letters, digits"),
        ];
        for (line, want) in bad {
            let e = Tokens::parse(&format!("# x\n{line}"), "tokens.txt").unwrap_err();
            assert!(e.to_string().contains(want), "{line}: {e}");
            assert!(e.to_string().contains("tokens.txt: entry 2"), "{e}");
        }
        let (_, line) = new_token("a", &[Role::Read]);
        let twice = format!("{line}\n{}", line.replacen("a ", "b ", 1));
        let e = Tokens::parse(&twice, "t").unwrap_err();
        assert!(e.to_string().contains("already configured"), "{e}");
        assert!(!e.to_string().contains("sha256:"), "{e}");
    }

    #[test]
    fn debug_output_names_callers_only() {
        let (tokens, admin, _) = tokens();
        let debug = format!("{tokens:?} {:?}", tokens.authenticate(&admin).unwrap());
        assert!(debug.contains("admin"));
        assert!(!debug.contains(&admin));
        assert!(!debug.contains("sha256"), "{debug}");
    }
}
