//! Locking shared state that holds plain data: a panic elsewhere cannot leave it half-written,
//! so a poisoned lock is taken over instead of turning into a second panic (which would cross
//! the N-API boundary).

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
