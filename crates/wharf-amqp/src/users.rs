//! Who may log in over AMQP. Until users are configurable, this is RabbitMQ's out-of-the-box
//! rule: user `guest`, password `guest`, and only from a loopback address.

use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Clone, Debug)]
pub struct Users {
    /// user → (password, may connect only from loopback)
    entries: BTreeMap<String, (String, bool)>,
}

impl Users {
    /// RabbitMQ's default: guest/guest, loopback only.
    pub fn guest_only() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert("guest".to_owned(), ("guest".to_owned(), true));
        Users { entries }
    }

    /// Ok, or why the login is refused (for the log; the client is told only "refused").
    pub fn authenticate(&self, user: &str, password: &str, peer: IpAddr) -> Result<(), String> {
        match self.entries.get(user) {
            Some((expected, loopback_only)) if constant_time_eq(expected.as_bytes(), password.as_bytes()) => {
                if *loopback_only && !peer.is_loopback() {
                    Err(format!("user '{user}' can only connect via localhost"))
                } else {
                    Ok(())
                }
            }
            Some(_) => Err(format!("invalid credentials for user '{user}'")),
            None => Err(format!("user '{user}' does not exist")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_logs_in_from_loopback_only_and_with_its_password() {
        let users = Users::guest_only();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(users.authenticate("guest", "guest", local).is_ok());
        assert!(users.authenticate("guest", "guest", "::1".parse().unwrap()).is_ok());
        assert!(users.authenticate("guest", "guest", remote).unwrap_err().contains("localhost"));
        assert!(users.authenticate("guest", "wrong", local).is_err());
        assert!(users.authenticate("nobody", "guest", local).is_err());
    }
}
