//! A value the run loop, the control socket and the metrics share.

use std::sync::{Arc, Mutex, MutexGuard};

/// Shared behind a mutex. A panic elsewhere cannot leave the value half-written (every change is
/// one push or one assignment of a field), so a poisoned lock is read like any other.
#[derive(Default)]
pub(crate) struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
