//! How many proxied calls may be in flight at once, in total and per user.
//!
//! A proxied call holds a connection to the provider, two streaming bodies and a spawned audit
//! write; a streamed completion runs for minutes. The rate limiter counts calls *started* per
//! minute, not calls *open*, so without these caps one user could hold thousands of streams open.
//! A [`Permit`] is held by the call's bookkeeping ([`super::call::Call`]) and so lives until the
//! response body has finished or been dropped, not just until the response head, and then until
//! the call's audit record is written: the caps also bound the record writes waiting for the
//! store.
//!
//! The per-user table only has entries for users with a call in flight: the last permit of a user
//! removes its entry, so the table cannot grow with the number of users who ever called.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use koryphaios_core::UserId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls in flight per user (only users with at least one).
type InFlight = Arc<Mutex<HashMap<UserId, usize>>>;

/// The two caps.
pub struct Limiter {
    global: Arc<Semaphore>,
    per_user_max: usize,
    per_user: InFlight,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("global_available", &self.global.available_permits())
            .field("per_user_max", &self.per_user_max)
            .finish_non_exhaustive()
    }
}

/// The cap that refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `KORYPHAIOS_PROXY_MAX_CONCURRENT`.
    Global,
    /// `KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER`.
    User,
}

impl Limiter {
    /// At most `global` calls in flight, and at most `per_user` of one user.
    pub fn new(global: usize, per_user: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global)),
            per_user_max: per_user,
            per_user: Arc::default(),
        }
    }

    /// A place for one more call of `user`, or which cap is full (never waits: a caller that is
    /// refused retries, rather than piling up waiting requests).
    pub fn try_acquire(&self, user: &UserId) -> Result<Permit, Full> {
        let global = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Full::Global)?;
        let mut table = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        let count = table.entry(user.clone()).or_insert(0);
        if *count >= self.per_user_max {
            // Normally this user has calls in flight; with a cap of 0 the entry is new and must
            // not stay behind.
            if *count == 0 {
                table.remove(user);
            }
            return Err(Full::User);
        }
        *count += 1;
        Ok(Permit {
            _global: global,
            user: user.clone(),
            per_user: Arc::clone(&self.per_user),
        })
    }

    /// How many users have a call in flight.
    pub fn users_in_flight(&self) -> usize {
        self.per_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One call's place under both caps, given back when dropped.
pub struct Permit {
    _global: OwnedSemaphorePermit,
    user: UserId,
    per_user: InFlight,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut table = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = table.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_its_own_cap_and_the_table_empties() {
        let limiter = Limiter::new(10, 2);
        let ada = UserId::generate();
        let bob = UserId::generate();
        let first = limiter.try_acquire(&ada).unwrap();
        let second = limiter.try_acquire(&ada).unwrap();
        assert_eq!(limiter.try_acquire(&ada).unwrap_err(), Full::User);
        let other = limiter.try_acquire(&bob).unwrap();
        assert_eq!(limiter.users_in_flight(), 2);
        drop(first);
        let third = limiter.try_acquire(&ada).unwrap();
        drop((second, third, other));
        assert_eq!(limiter.users_in_flight(), 0);
        assert_eq!(limiter.global.available_permits(), 10);
    }

    #[test]
    fn the_global_cap_holds_across_users() {
        let limiter = Limiter::new(2, 2);
        let held: Vec<Permit> = (0..2)
            .map(|_| limiter.try_acquire(&UserId::generate()).unwrap())
            .collect();
        assert_eq!(
            limiter.try_acquire(&UserId::generate()).unwrap_err(),
            Full::Global
        );
        // A refusal leaves nothing behind.
        assert_eq!(limiter.users_in_flight(), 2);
        drop(held);
        assert_eq!(limiter.users_in_flight(), 0);
        assert!(limiter.try_acquire(&UserId::generate()).is_ok());
    }
}
