//! etcd's `Auth` API from the client side: `raftkv user …`, `raftkv role …`
//! and `raftkv auth …`, printing what etcdctl 3.4 prints. Changes are
//! writes, sent once; reads are retried on the next endpoint.

use std::io::BufRead as _;

use super::{Client, ClientError};
use crate::auth::AuthError;
use crate::proto::authpb::permission::Type as PermType;
use crate::proto::authpb::{Permission, UserAddOptions};
use crate::proto::etcdserverpb::auth_client::AuthClient;
use crate::proto::etcdserverpb::*;

/// `raftkv user …`: etcdctl's user commands.
#[derive(clap::Subcommand)]
pub enum UserOp {
    /// Add a user: NAME, or NAME:PASSWORD (without one, it is read from stdin).
    Add {
        user: String,
        /// A user that cannot log in with a password (only with a client
        /// certificate whose common name is its name).
        #[arg(long)]
        no_password: bool,
    },
    /// Delete a user.
    Delete { user: String },
    /// A user's roles.
    Get { user: String },
    /// Every user.
    List,
    /// Change a user's password (read from stdin).
    Passwd { user: String },
    /// Grant a role to a user.
    GrantRole { user: String, role: String },
    /// Revoke a role from a user.
    RevokeRole { user: String, role: String },
}

/// `raftkv role …`: etcdctl's role commands.
#[derive(clap::Subcommand)]
pub enum RoleOp {
    /// Add a role.
    Add { role: String },
    /// Delete a role (and take it from every user).
    Delete { role: String },
    /// A role's permissions.
    Get { role: String },
    /// Every role.
    List,
    /// Let a role read, write or readwrite KEY, the range [KEY, END), every
    /// key with the prefix KEY (--prefix) or every key from KEY on (--from-key).
    GrantPermission {
        role: String,
        #[arg(value_parser = ["read", "write", "readwrite"])]
        perm: String,
        key: String,
        end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
    /// Take back a permission given with the same KEY and END (or --prefix,
    /// --from-key).
    RevokePermission {
        role: String,
        key: String,
        end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
}

/// `raftkv auth …`.
#[derive(clap::Subcommand)]
pub enum AuthOp {
    /// Enable auth: needs a `root` user (the `root` role is made and granted
    /// to it if missing, as etcdctl does).
    Enable,
    /// Disable auth.
    Disable,
    /// Whether auth is enabled, and the auth store's revision.
    Status,
}

impl Client {
    async fn auth(&mut self) -> AuthClient<super::Channel> {
        AuthClient::new(self.write_channel().await)
    }

    pub async fn auth_enable(&mut self) -> Result<(), ClientError> {
        let result = self.auth().await.auth_enable(AuthEnableRequest {}).await;
        self.after_write(result).map(drop)
    }

    pub async fn auth_disable(&mut self) -> Result<(), ClientError> {
        let result = self.auth().await.auth_disable(AuthDisableRequest {}).await;
        self.after_write(result).map(drop)
    }

    pub async fn auth_status(&mut self) -> Result<AuthStatusResponse, ClientError> {
        self.idempotent(
            |ch| async move { Ok(AuthClient::new(ch).auth_status(AuthStatusRequest {}).await?.into_inner()) },
        )
        .await
    }

    pub async fn user_add(&mut self, name: &str, password: &str, no_password: bool) -> Result<(), ClientError> {
        let req = AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: Some(UserAddOptions { no_password }),
            hashed_password: String::new(),
        };
        let result = self.auth().await.user_add(req).await;
        self.after_write(result).map(drop)
    }

    pub async fn user_delete(&mut self, name: &str) -> Result<(), ClientError> {
        let result = self.auth().await.user_delete(AuthUserDeleteRequest { name: name.into() }).await;
        self.after_write(result).map(drop)
    }

    pub async fn user_change_password(&mut self, name: &str, password: &str) -> Result<(), ClientError> {
        let req = AuthUserChangePasswordRequest { name: name.into(), password: password.into(), ..Default::default() };
        let result = self.auth().await.user_change_password(req).await;
        self.after_write(result).map(drop)
    }

    pub async fn user_grant_role(&mut self, user: &str, role: &str) -> Result<(), ClientError> {
        let req = AuthUserGrantRoleRequest { user: user.into(), role: role.into() };
        let result = self.auth().await.user_grant_role(req).await;
        self.after_write(result).map(drop)
    }

    pub async fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<(), ClientError> {
        let req = AuthUserRevokeRoleRequest { name: user.into(), role: role.into() };
        let result = self.auth().await.user_revoke_role(req).await;
        self.after_write(result).map(drop)
    }

    pub async fn user_get(&mut self, name: &str) -> Result<Vec<String>, ClientError> {
        let req = AuthUserGetRequest { name: name.into() };
        self.idempotent(|ch| {
            let req = req.clone();
            async move { Ok(AuthClient::new(ch).user_get(req).await?.into_inner().roles) }
        })
        .await
    }

    pub async fn user_list(&mut self) -> Result<Vec<String>, ClientError> {
        self.idempotent(|ch| async move {
            Ok(AuthClient::new(ch).user_list(AuthUserListRequest {}).await?.into_inner().users)
        })
        .await
    }

    pub async fn role_add(&mut self, role: &str) -> Result<(), ClientError> {
        let result = self.auth().await.role_add(AuthRoleAddRequest { name: role.into() }).await;
        self.after_write(result).map(drop)
    }

    pub async fn role_delete(&mut self, role: &str) -> Result<(), ClientError> {
        let result = self.auth().await.role_delete(AuthRoleDeleteRequest { role: role.into() }).await;
        self.after_write(result).map(drop)
    }

    pub async fn role_get(&mut self, role: &str) -> Result<Vec<Permission>, ClientError> {
        let req = AuthRoleGetRequest { role: role.into() };
        self.idempotent(|ch| {
            let req = req.clone();
            async move { Ok(AuthClient::new(ch).role_get(req).await?.into_inner().perm) }
        })
        .await
    }

    pub async fn role_list(&mut self) -> Result<Vec<String>, ClientError> {
        self.idempotent(|ch| async move {
            Ok(AuthClient::new(ch).role_list(AuthRoleListRequest {}).await?.into_inner().roles)
        })
        .await
    }

    pub async fn role_grant_permission(&mut self, role: &str, perm: Permission) -> Result<(), ClientError> {
        let req = AuthRoleGrantPermissionRequest { name: role.into(), perm: Some(perm) };
        let result = self.auth().await.role_grant_permission(req).await;
        self.after_write(result).map(drop)
    }

    pub async fn role_revoke_permission(&mut self, role: &str, key: &[u8], end: &[u8]) -> Result<(), ClientError> {
        let req = AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.to_vec().into(),
            range_end: end.to_vec().into(),
        };
        let result = self.auth().await.role_revoke_permission(req).await;
        self.after_write(result).map(drop)
    }
}

/// `NAME[:PASSWORD]`, as etcdctl's `--user` and `user add` take it.
pub fn split_user(text: &str) -> (String, Option<String>) {
    match text.split_once(':') {
        Some((name, password)) => (name.to_owned(), Some(password.to_owned())),
        None => (text.to_owned(), None),
    }
}

/// A password read from stdin (one line), prompting on stderr.
pub fn read_password(prompt: &str) -> Result<String, ClientError> {
    eprint!("{prompt}: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|source| ClientError::Io { path: "stdin".into(), source })?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The keys a permission names, as etcdctl reads KEY, END, --prefix and
/// --from-key: `(key, range_end)`.
fn perm_keys(key: &str, end: Option<String>, prefix: bool, from_key: bool) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    let given = [end.is_some(), prefix, from_key].iter().filter(|b| **b).count();
    if given > 1 {
        return Err(ClientError::BadSettings("give at most one of END, --prefix and --from-key".into()));
    }
    let key = key.as_bytes().to_vec();
    let end = match (end, prefix, from_key) {
        (Some(end), ..) => end.into_bytes(),
        (None, true, _) if key.is_empty() => vec![0],
        (None, true, _) => crate::kv::prefix_end(&key),
        (None, _, true) => vec![0],
        _ => Vec::new(),
    };
    // etcdctl's `--prefix ""` and `--from-key ""` mean every key.
    let key = if key.is_empty() && !end.is_empty() { vec![0] } else { key };
    Ok((key, end))
}

/// A permission's keys as etcdctl prints them.
fn describe(perm: &Permission) -> String {
    let (key, end) = (String::from_utf8_lossy(&perm.key), String::from_utf8_lossy(&perm.range_end));
    match perm.range_end.as_ref() {
        [] => key.into_owned(),
        [0] => format!("[{key}, <open ended>"),
        _ if crate::kv::prefix_end(&perm.key) == perm.range_end.as_ref() => format!("[{key}, {end}) (prefix {key})"),
        _ => format!("[{key}, {end})"),
    }
}

pub async fn run_user(op: UserOp, endpoints: &[String]) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoints).await?;
    match op {
        UserOp::Add { user, no_password } => {
            let (name, password) = split_user(&user);
            let password = match (no_password, password) {
                (true, _) => String::new(),
                (false, Some(p)) => p,
                (false, None) => read_password(&format!("Password of {name}"))?,
            };
            client.user_add(&name, &password, no_password).await?;
            println!("User {name} created");
        }
        UserOp::Delete { user } => {
            client.user_delete(&user).await?;
            println!("User {user} deleted");
        }
        UserOp::Get { user } => {
            let roles = client.user_get(&user).await?;
            println!("User: {user}");
            println!("Roles: {}", roles.join(" "));
        }
        UserOp::List => client.user_list().await?.iter().for_each(|u| println!("{u}")),
        UserOp::Passwd { user } => {
            let password = read_password("Password")?;
            client.user_change_password(&user, &password).await?;
            println!("Password updated");
        }
        UserOp::GrantRole { user, role } => {
            client.user_grant_role(&user, &role).await?;
            println!("Role {role} is granted to user {user}");
        }
        UserOp::RevokeRole { user, role } => {
            client.user_revoke_role(&user, &role).await?;
            println!("Role {role} is revoked from user {user}");
        }
    }
    Ok(())
}

pub async fn run_role(op: RoleOp, endpoints: &[String]) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoints).await?;
    match op {
        RoleOp::Add { role } => {
            client.role_add(&role).await?;
            println!("Role {role} created");
        }
        RoleOp::Delete { role } => {
            client.role_delete(&role).await?;
            println!("Role {role} deleted");
        }
        RoleOp::Get { role } => {
            let perms = client.role_get(&role).await?;
            println!("Role {role}");
            for (title, kinds) in [
                ("KV Read:", [PermType::Read, PermType::Readwrite]),
                ("KV Write:", [PermType::Write, PermType::Readwrite]),
            ] {
                println!("{title}");
                for perm in perms.iter().filter(|p| kinds.iter().any(|k| *k as i32 == p.perm_type)) {
                    println!("\t{}", describe(perm));
                }
            }
        }
        RoleOp::List => client.role_list().await?.iter().for_each(|r| println!("{r}")),
        RoleOp::GrantPermission { role, perm, key, end, prefix, from_key } => {
            let (key, range_end) = perm_keys(&key, end, prefix, from_key)?;
            let perm_type = match perm.as_str() {
                "read" => PermType::Read,
                "write" => PermType::Write,
                _ => PermType::Readwrite,
            };
            let perm = Permission { perm_type: perm_type as i32, key: key.into(), range_end: range_end.into() };
            client.role_grant_permission(&role, perm).await?;
            println!("Role {role} updated");
        }
        RoleOp::RevokePermission { role, key, end, prefix, from_key } => {
            let (key, range_end) = perm_keys(&key, end, prefix, from_key)?;
            client.role_revoke_permission(&role, &key, &range_end).await?;
            let (key, end) = (String::from_utf8_lossy(&key), String::from_utf8_lossy(&range_end));
            match range_end.is_empty() {
                true => println!("Permission of key {key} is revoked from role {role}"),
                false => println!("Permission of range [{key}, {end}) is revoked from role {role}"),
            }
        }
    }
    Ok(())
}

pub async fn run_auth(op: AuthOp, endpoints: &[String]) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoints).await?;
    match op {
        AuthOp::Enable => {
            match client.auth_enable().await {
                // As etcdctl: a root user without the root role gets it.
                Err(ClientError::Server(s)) if s.message() == AuthError::RootRoleMissing.to_string() => {
                    match client.role_add(crate::auth::ROOT).await {
                        Err(ClientError::Server(s)) if s.message() == AuthError::RoleAlreadyExists.to_string() => {}
                        other => other?,
                    }
                    client.user_grant_role(crate::auth::ROOT, crate::auth::ROOT).await?;
                    client.auth_enable().await?;
                }
                other => other?,
            }
            println!("Authentication Enabled");
        }
        AuthOp::Disable => {
            client.auth_disable().await?;
            println!("Authentication Disabled");
        }
        AuthOp::Status => {
            let status = client.auth_status().await?;
            println!("Authentication Status: {}", status.enabled);
            println!("AuthRevision: {}", status.auth_revision);
        }
    }
    Ok(())
}
