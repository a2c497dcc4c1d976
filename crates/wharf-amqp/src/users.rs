//! Who may log in over AMQP, and what each user may do in each vhost, as RabbitMQ has it:
//! users with passwords (plain in the config file, or RabbitMQ's salted SHA-256 hashes copied
//! from its definitions), and per-vhost configure / write / read regular expressions.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use regex::Regex;
use sha2::{Digest, Sha256};

/// A user as the config file declares it.
#[derive(Clone, Debug, Default)]
pub struct UserSpec {
    pub name: String,
    /// Plain text (for local use; the file then holds the password itself).
    pub password: Option<String>,
    /// RabbitMQ's `rabbit_password_hashing_sha256` form: base64 of a 4-byte salt followed by
    /// SHA-256(salt ‖ password).
    pub password_hash: Option<String>,
    pub tags: Vec<String>,
}

/// What a user may do in a vhost: regular expressions over resource names, matched anywhere in
/// the name as RabbitMQ matches them; an empty expression allows nothing.
#[derive(Clone, Debug, Default)]
pub struct PermissionSpec {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Permission {
    Configure,
    Write,
    Read,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Queue,
    Exchange,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        })
    }
}

#[derive(Clone, Debug)]
enum Password {
    Plain(String),
    Sha256 { salt: [u8; 4], digest: [u8; 32] },
}

impl Password {
    fn matches(&self, given: &str) -> bool {
        match self {
            Password::Plain(p) => constant_time_eq(p.as_bytes(), given.as_bytes()),
            Password::Sha256 { salt, digest } => constant_time_eq(digest, &sha256_salted(salt, given)),
        }
    }
}

#[derive(Clone, Debug)]
struct VhostPermissions {
    configure: Option<Regex>,
    write: Option<Regex>,
    read: Option<Regex>,
}

#[derive(Debug)]
pub struct User {
    name: String,
    password: Password,
    loopback_only: bool,
    tags: Vec<String>,
    permissions: BTreeMap<String, VhostPermissions>,
}

impl User {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// A user may open a vhost they have a permission entry for.
    pub fn may_open_vhost(&self, vhost: &str) -> bool {
        self.permissions.contains_key(vhost)
    }

    /// Ok, or RabbitMQ's refusal text. The default exchange is checked as `amq.default`.
    pub fn check(
        &self,
        vhost: &str,
        permission: Permission,
        kind: Resource,
        name: &str,
    ) -> Result<(), String> {
        let name = if kind == Resource::Exchange && name.is_empty() { "amq.default" } else { name };
        let allowed = self.permissions.get(vhost).is_some_and(|p| {
            let re = match permission {
                Permission::Configure => &p.configure,
                Permission::Write => &p.write,
                Permission::Read => &p.read,
            };
            re.as_ref().is_some_and(|re| re.is_match(name))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!("access to {kind} '{name}' in vhost '{vhost}' refused for user '{}'", self.name))
        }
    }
}

/// Every user who may log in.
#[derive(Clone, Debug)]
pub struct Users {
    users: BTreeMap<String, Arc<User>>,
}

impl Users {
    /// RabbitMQ's out-of-the-box user: guest/guest, every permission on `/`, loopback only.
    pub fn guest_only() -> Self {
        let guest = UserSpec { name: "guest".into(), password: Some("guest".into()), ..UserSpec::default() };
        let all = PermissionSpec {
            user: "guest".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        Users::new(vec![guest], vec![all]).expect("the built-in guest user is valid")
    }

    /// Users from the config file. A user named `guest` may connect only from loopback, as
    /// RabbitMQ's `loopback_users` default says.
    pub fn new(users: Vec<UserSpec>, permissions: Vec<PermissionSpec>) -> Result<Users, String> {
        let mut built: BTreeMap<String, User> = BTreeMap::new();
        for spec in users {
            if spec.name.is_empty() {
                return Err("a user needs a name".into());
            }
            let password = match (spec.password, spec.password_hash) {
                (Some(p), None) => Password::Plain(p),
                (None, Some(h)) => parse_hash(&h).map_err(|e| format!("user '{}': {e}", spec.name))?,
                _ => {
                    return Err(format!(
                        "user '{}' needs exactly one of password and password_hash",
                        spec.name
                    ))
                }
            };
            let user = User {
                loopback_only: spec.name == "guest",
                name: spec.name.clone(),
                password,
                tags: spec.tags,
                permissions: BTreeMap::new(),
            };
            if built.insert(spec.name.clone(), user).is_some() {
                return Err(format!("user '{}' is declared twice", spec.name));
            }
        }
        for p in permissions {
            let Some(user) = built.get_mut(&p.user) else {
                return Err(format!("permission for unknown user '{}'", p.user));
            };
            let compile = |what: &str, re: &str| -> Result<Option<Regex>, String> {
                if re.is_empty() {
                    return Ok(None);
                }
                Regex::new(re).map(Some).map_err(|e| format!("{what} permission of user '{}': {e}", p.user))
            };
            let entry = VhostPermissions {
                configure: compile("configure", &p.configure)?,
                write: compile("write", &p.write)?,
                read: compile("read", &p.read)?,
            };
            if user.permissions.insert(p.vhost.clone(), entry).is_some() {
                return Err(format!("user '{}' has two permission entries for vhost '{}'", p.user, p.vhost));
            }
        }
        Ok(Users { users: built.into_iter().map(|(k, v)| (k, Arc::new(v))).collect() })
    }

    /// Whether these are the built-in users (guest only) rather than the config file's.
    pub fn is_guest_only(&self) -> bool {
        self.users.len() == 1 && self.users.contains_key("guest")
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user, or why the login is refused (for the log; the client is told only "refused").
    pub fn authenticate(&self, name: &str, password: &str, peer: IpAddr) -> Result<Arc<User>, String> {
        match self.users.get(name) {
            Some(user) if user.password.matches(password) => {
                // `::ffff:127.0.0.1` (IPv4 through a dual-stack listener) is loopback too.
                if user.loopback_only && !peer.to_canonical().is_loopback() {
                    Err(format!("user '{name}' can only connect via localhost"))
                } else {
                    Ok(user.clone())
                }
            }
            Some(_) => Err(format!("invalid credentials for user '{name}'")),
            None => Err(format!("user '{name}' does not exist")),
        }
    }
}

fn sha256_salted(salt: &[u8; 4], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

fn parse_hash(text: &str) -> Result<Password, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "password_hash is not base64".to_owned())?;
    if bytes.len() != 36 {
        return Err(format!(
            "password_hash decodes to {} bytes; a RabbitMQ SHA-256 hash is 36 (4 salt + 32 digest)",
            bytes.len()
        ));
    }
    let mut salt = [0; 4];
    salt.copy_from_slice(&bytes[..4]);
    let mut digest = [0; 32];
    digest.copy_from_slice(&bytes[4..]);
    Ok(Password::Sha256 { salt, digest })
}

/// A RabbitMQ-compatible hash of `password` (what `rabbitmqctl hash_password` prints).
pub fn hash_password(password: &str, salt: [u8; 4]) -> String {
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(&sha256_salted(&salt, password));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn guest_logs_in_from_loopback_only_and_with_its_password() {
        let users = Users::guest_only();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(users.authenticate("guest", "guest", local()).is_ok());
        assert!(users.authenticate("guest", "guest", "::1".parse().unwrap()).is_ok());
        assert!(users.authenticate("guest", "guest", "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(users.authenticate("guest", "guest", "::ffff:10.1.2.3".parse().unwrap()).is_err());
        assert!(users.authenticate("guest", "guest", remote).unwrap_err().contains("localhost"));
        assert!(users.authenticate("guest", "wrong", local()).is_err());
        assert!(users.authenticate("nobody", "guest", local()).is_err());
    }

    #[test]
    fn rabbitmq_sha256_hashes_verify() {
        // From `rabbitmqctl export_definitions` of RabbitMQ 3.10.8 after `add_user app test12`.
        let spec = UserSpec {
            name: "app".into(),
            password_hash: Some("dJxWcnFBk7neqTGYg+v0ucBZeuAC8fbplk/hg6DEu0/VwtZe".into()),
            ..UserSpec::default()
        };
        let users = Users::new(vec![spec], vec![]).unwrap();
        assert!(users.authenticate("app", "test12", "10.0.0.9".parse().unwrap()).is_ok());
        assert!(users.authenticate("app", "test13", local()).is_err());
        let ours = hash_password("s3cret", [1, 2, 3, 4]);
        let spec = UserSpec { name: "b".into(), password_hash: Some(ours), ..UserSpec::default() };
        assert!(Users::new(vec![spec], vec![]).unwrap().authenticate("b", "s3cret", local()).is_ok());
    }

    #[test]
    fn permissions_match_anywhere_and_empty_allows_nothing() {
        let spec = UserSpec { name: "app".into(), password: Some("p".into()), ..UserSpec::default() };
        let perm = PermissionSpec {
            user: "app".into(),
            vhost: "/".into(),
            configure: "^app\\.".into(),
            write: "orders".into(),
            read: "".into(),
        };
        let users = Users::new(vec![spec], vec![perm]).unwrap();
        let app = users.authenticate("app", "p", local()).unwrap();
        assert!(app.may_open_vhost("/") && !app.may_open_vhost("other"));
        assert!(app.check("/", Permission::Configure, Resource::Queue, "app.jobs").is_ok());
        assert!(app.check("/", Permission::Configure, Resource::Queue, "jobs").is_err());
        assert!(app.check("/", Permission::Write, Resource::Exchange, "eu-orders-x").is_ok());
        assert_eq!(
            app.check("/", Permission::Read, Resource::Queue, "app.jobs").unwrap_err(),
            "access to queue 'app.jobs' in vhost '/' refused for user 'app'"
        );
        assert_eq!(
            app.check("/", Permission::Write, Resource::Exchange, "").unwrap_err(),
            "access to exchange 'amq.default' in vhost '/' refused for user 'app'"
        );
        assert!(app.check("other", Permission::Write, Resource::Exchange, "orders").is_err());
    }

    #[test]
    fn bad_declarations_are_refused_with_a_reason() {
        let user =
            |name: &str| UserSpec { name: name.into(), password: Some("p".into()), ..UserSpec::default() };
        let both = UserSpec { password_hash: Some("x".into()), ..user("a") };
        assert!(Users::new(vec![both], vec![]).unwrap_err().contains("exactly one"));
        let bad_hash = UserSpec { password: None, password_hash: Some("AAAA".into()), ..user("a") };
        assert!(Users::new(vec![bad_hash], vec![]).unwrap_err().contains("36"));
        let perm = PermissionSpec { user: "ghost".into(), vhost: "/".into(), ..PermissionSpec::default() };
        assert!(Users::new(vec![user("a")], vec![perm]).unwrap_err().contains("unknown user 'ghost'"));
        let perm = PermissionSpec {
            user: "a".into(),
            vhost: "/".into(),
            configure: "(".into(),
            ..PermissionSpec::default()
        };
        assert!(Users::new(vec![user("a")], vec![perm]).unwrap_err().contains("configure permission"));
    }
}
