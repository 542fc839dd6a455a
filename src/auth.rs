//! Client authentication and authorization at the proxy (`[auth]`).
//!
//! With users configured, a client must `AUTH [username] password` (or
//! `HELLO ... AUTH username password`) before anything but AUTH, HELLO and
//! QUIT. Each user has roles: `read` (read-only commands), `write`
//! (commands that write), `admin` (FLUSHALL/FLUSHDB, CONFIG, SCRIPT and
//! FUNCTION FLUSH/DELETE, SWAPDB, and PROXY). Commands of Redis's
//! `@dangerous` category that are not admin commands (KEYS, SORT, MIGRATE,
//! ...) are refused unless `auth.allow_dangerous`. Passwords are compared in
//! constant time and never logged. With no users, every client may run
//! everything (the default).

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::command::{CommandSpec, Flags, Policy};
use crate::config::{resolve_secret, AuthConfig, Role, Secret};
use crate::error::ProxyError;

/// An authenticated user.
#[derive(Debug)]
pub struct User {
    /// The name.
    pub name: String,
    password: Secret,
    roles: Vec<Role>,
}

impl User {
    /// Whether the user has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The users and the rules.
#[derive(Debug, Default)]
pub struct Authenticator {
    users: Vec<Arc<User>>,
    allow_dangerous: bool,
}

/// Commands that need the admin role.
fn is_admin_command(name: &str) -> bool {
    matches!(
        name,
        "flushall"
            | "flushdb"
            | "swapdb"
            | "script|flush"
            | "function|flush"
            | "function|delete"
            | "function|restore"
    ) || name.starts_with("config|")
}

impl Authenticator {
    /// Builds the users from `[auth]` (passwords resolved from the config,
    /// the environment or files).
    pub fn from_config(c: &AuthConfig) -> Result<Authenticator, String> {
        let users = c
            .users
            .iter()
            .map(|u| {
                let password = resolve_secret(
                    &format!("auth.users.{}.password", u.name),
                    &u.password,
                    &u.password_env,
                    &u.password_file,
                )?
                .ok_or_else(|| format!("auth user {:?} has no password", u.name))?;
                Ok(Arc::new(User {
                    name: u.name.clone(),
                    password,
                    roles: u.roles.clone(),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Authenticator {
            users,
            allow_dangerous: c.allow_dangerous,
        })
    }

    /// Whether clients must authenticate.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// The user for `name` (`default` when `None`) if `password` matches,
    /// compared in constant time.
    pub fn login(&self, name: Option<&[u8]>, password: &[u8]) -> Result<Arc<User>, ProxyError> {
        let name = name.unwrap_or(b"default");
        let mut found = None;
        for u in &self.users {
            let name_ok = u.name.as_bytes().ct_eq(name);
            let pw_ok = u.password.0.as_bytes().ct_eq(password);
            if bool::from(name_ok & pw_ok) {
                found = Some(u.clone());
            }
        }
        found.ok_or(ProxyError::WrongPass)
    }

    /// Whether `user` may run `spec` (`None`: auth disabled, everything goes).
    pub fn permit(&self, user: Option<&User>, spec: &CommandSpec) -> Result<(), ProxyError> {
        let Some(user) = user else {
            return Ok(());
        };
        let deny = |why: &str| {
            Err(ProxyError::NoPerm(format!(
                "user {} has no permissions to run the '{}' command{why}",
                user.name, spec.name
            )))
        };
        // Redis's own `admin` flag (SLOWLOG, CLIENT KILL, CONFIG, ...) and
        // the keyspace wipers need the admin role, local commands included.
        if is_admin_command(&spec.name) || spec.flags.contains(Flags::ADMIN) {
            return if user.has(Role::Admin) {
                Ok(())
            } else {
                deny("")
            };
        }
        if spec.flags.contains(Flags::DANGEROUS) && !self.allow_dangerous {
            return deny(" (dangerous commands need auth.allow_dangerous)");
        }
        if spec.policy == Policy::Local {
            return Ok(());
        }
        let needed = if spec.flags.contains(Flags::WRITE) {
            Role::Write
        } else {
            Role::Read
        };
        if user.has(needed) || user.has(Role::Admin) {
            Ok(())
        } else {
            deny("")
        }
    }

    /// Whether `user` may run PROXY commands.
    pub fn permit_proxy(&self, user: Option<&User>) -> Result<(), ProxyError> {
        match user {
            Some(u) if !u.has(Role::Admin) => Err(ProxyError::NoPerm(format!(
                "user {} has no permissions to run the 'proxy' command",
                u.name
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;
    use crate::config::UserConfig;

    fn auth() -> Authenticator {
        let user = |name: &str, roles: Vec<Role>| UserConfig {
            name: name.into(),
            password: Some(Secret(format!("{name}-pw"))),
            password_env: None,
            password_file: None,
            roles,
        };
        Authenticator::from_config(&AuthConfig {
            users: vec![
                user("default", vec![Role::Read]),
                user("app", vec![Role::Read, Role::Write]),
                user("ops", vec![Role::Admin]),
            ],
            allow_dangerous: false,
        })
        .unwrap()
    }

    fn spec(name: &str) -> &'static CommandSpec {
        CommandTable::builtin().by_name(name.as_bytes()).unwrap()
    }

    #[test]
    fn login_and_roles() {
        let a = auth();
        assert!(a.enabled());
        let reader = a.login(None, b"default-pw").unwrap();
        assert!(a.login(None, b"nope").is_err());
        assert!(a.login(Some(b"app"), b"default-pw").is_err());
        let app = a.login(Some(b"app"), b"app-pw").unwrap();
        let ops = a.login(Some(b"ops"), b"ops-pw").unwrap();
        assert!(a.permit(Some(&reader), spec("get")).is_ok());
        assert!(a.permit(Some(&reader), spec("set")).is_err());
        assert!(a.permit(Some(&reader), spec("ping")).is_ok());
        assert!(a.permit(Some(&app), spec("set")).is_ok());
        assert!(a.permit(Some(&app), spec("flushall")).is_err());
        assert!(a.permit(Some(&app), spec("config|set")).is_err());
        assert!(a.permit(Some(&ops), spec("flushall")).is_ok());
        assert!(a.permit(Some(&ops), spec("keys")).is_err(), "dangerous");
        assert!(a.permit_proxy(Some(&app)).is_err());
        assert!(a.permit_proxy(Some(&ops)).is_ok());
        assert!(Authenticator::default().permit(None, spec("keys")).is_ok());
    }
}
