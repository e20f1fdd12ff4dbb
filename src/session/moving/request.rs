//! A request for keys of a moving prefix, as the gate carries it: data alone, beneath the
//! session's actions that name it.

use std::sync::Arc;

use bytes::Bytes;

use crate::command::{Access, SplitKind};
use crate::keyspace::Moving;
use crate::protocol::Request;

/// A request for moving keys, as [`divert`] made it.
#[derive(Debug)]
pub struct MovingRequest {
    /// Its turn among the client's requests through gates: over when this is dropped, after
    /// its reply.
    pub(super) turn: crate::keyspace::Turn,
    /// The migration its moving keys belong to.
    pub(super) moving: Arc<Moving>,
    /// The request as the client sent it.
    pub(super) request: Request,
    /// Where its keys are among its arguments.
    pub(super) positions: Vec<usize>,
    /// Its keys of the migration, as the backends store them (any prefix a route strips
    /// removed): those moved before it is sent.
    pub(super) keys: Vec<Bytes>,
    /// What it is.
    pub(super) how: How,
}

/// The kinds of command the gate carries.
#[derive(Debug, Clone, Copy)]
pub(super) enum How {
    /// Forwarded whole to the node of its keys (a script with keys among them).
    Forward(Access),
    /// Split by slot when its keys span several.
    Split(SplitKind, Access),
}
