//! Password hashes: bcrypt, as etcd stores them, so a user's hash means the
//! same here and there. Hashing is slow on purpose (the cost doubles the
//! work per step); callers run it off the async workers.

use crate::proto::authpb::User;

/// etcd's default `--bcrypt-cost` (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_COST: u32 = 10;

/// The bcrypt hash of `password`, with a fresh salt.
pub fn hash(password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(password, cost)
}

/// Whether `password` is `user`'s. A user added without a password (etcd's
/// `--no-password`) never authenticates with one.
pub fn verify(user: &User, password: &str) -> bool {
    if user.options.as_ref().is_some_and(|o| o.no_password) || user.password.is_empty() {
        return false;
    }
    let Ok(hash) = std::str::from_utf8(&user.password) else { return false };
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Whether `text` is a bcrypt hash (etcd 3.5 takes one in place of a
/// password).
pub fn is_hash(text: &str) -> bool {
    text.parse::<bcrypt::HashParts>().is_ok()
}
