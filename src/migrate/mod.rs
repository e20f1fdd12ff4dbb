//! Moving the keys of a prefix from one backend to another while clients use them: the
//! groundwork of `respgate migrate` (issue 24). What is here decides and records; nothing
//! routes by it yet.
//!
//! # The design
//! - **One record per migration**, in one backend ([`Store`]): its prefix (and slot range),
//!   source, target, [`Phase`], progress, and a version that every write compares and sets,
//!   so that two controllers cannot both move it on.
//! - **Phases that are safe side by side** ([`Phase`]): replicas see a new phase at slightly
//!   different times, so any two phases a migration can be in at once must route the keys
//!   without leaving one on both sides. The one dangerous step (from routing to the source to
//!   moving keys away from it) goes through a holding phase that the controller leaves only
//!   once every replica has acknowledged it.
//! - **Leases** ([`Sight`], [`Roster`]): every replica reads the state and writes its acknowledgements in
//!   a roster every third of a lease. One that could not read the state for a whole lease
//!   stops serving the keys a migration could concern; a controller counts a replica whose
//!   roster entry stayed the same for a lease and a margin as stopped, and does not wait for
//!   it.
//! - **A key moves atomically** with its time to live, with the source's own `MIGRATE` (a
//!   node moves a key to another and deletes it once the other has it, serving nothing in
//!   between): by the copier as it walks the source, and by a replica for a key a request
//!   touches first. A key created during the migration is created on the target.

pub mod cli;
mod controller;
mod copier;
mod driver;
mod lease;
mod mover;
mod phase;
mod replica;
mod store;

pub use controller::{Act, ControlError, Plan, act, start, store_of};
pub use driver::drive;
pub use lease::{Acknowledged, Roster, Sight, ack_entry, acknowledges};
pub use mover::{MoveError, Moved, move_key, move_keys};
pub use phase::Phase;
pub use replica::follow;
pub use store::{Exec, MIGRATIONS_KEY, Migration, ROSTER_KEY, Store, StoreError};

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::cluster::{Backend, Sending, Target};
use crate::command::Access;
use crate::protocol::Protocol;
use crate::protocol::request::encode_command;
use crate::slot::Slot;

/// The backend that holds the state, reached as any request reaches it: through its attempt
/// loop, to the master of the `{respgate}` slot, following failovers within its retry budget.
pub struct OnBackend(pub Arc<Backend>);

impl Exec for OnBackend {
    fn exec(&self, args: Vec<Bytes>) -> impl Future<Output = Bytes> {
        let mut payload = BytesMut::new();
        encode_command(&mut payload, &args);
        self.0.execute(Sending {
            payload: payload.freeze(),
            target: Target::Slot(Slot::for_key(MIGRATIONS_KEY.as_bytes())),
            access: Access::Write,
            protocol: Protocol::Resp2,
            db: 0,
            affinity: 0,
        })
    }
}
