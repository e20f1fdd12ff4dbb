//! respgate: a RESP proxy that puts a Redis Cluster behind one plain-Redis endpoint.
//!
//! # Layout
//! A request flows one way through these modules:
//!
//! - [`server`]: accepts clients (socket options, client limit) and starts a session each on
//!   one of the [`workers`], single-threaded runtimes that each own their backend connections.
//! - [`session`]: one client's loop; parses requests with [`protocol`] (one resumable framing
//!   engine for requests and replies, no recursion), answers the proxy's own commands, keeps
//!   replies in request order and bounds what the client is owed in bytes.
//! - [`command`]: the command table from the backend's `COMMAND`, with key positions and each
//!   command's [`command::Policy`] (what the proxy does with it), decided when the table loads.
//! - [`cluster`]: each backend of any kind (a Redis Cluster, a Sentinel group, a standalone
//!   server) as a [`cluster::Backend`]: the slot map (of [`slot`]s: hash slots) and its
//!   refresh, routing, the one judge ([`cluster::Backend::judge`]) that every attempt's
//!   outcome goes to (`MOVED`, `ASK`, `TRYAGAIN`, failover, lost connections, within one retry
//!   budget), and the one attempt loop ([`cluster::Backend::attempt_loop`]) that the shared
//!   connections and a client's own connection carry alike.
//! - [`multikey`]: splits `MGET`/`MSET`/`DEL`/... across slots and merges the replies.
//! - [`fanout`]: whole-keyspace commands (`DBSIZE`, `SCAN`, `FLUSHALL`, ...) over every master.
//! - [`broadcast`]: commands about the servers (`CONFIG SET` to every node, `CONFIG GET` from
//!   one master, `INFO` from every master) on each node's control connection.
//! - [`combine`]: how the replies of several nodes become one, for the three above: one
//!   reader of the replies' shapes, the shared rules (errors, sums, `+OK`), one order of nodes.
//! - [`backend`]: connections to nodes. One [`backend::NodeConn`] type owns transport, buffer
//!   and framing for every use (shared pipelined connections, a client's own, Pub/Sub, the
//!   handshake); the transport is behind [`backend::Connector`], the seam where tests plug in
//!   scripted nodes.
//!
//! Beneath them all, [`slot`] is the hash slot every layer speaks of. Files import downwards:
//! none imports a file that imports it back, directly or around a circle (`farm-studio look`
//! draws none). Some folders still reach into each other through different files (`acl` and
//! `command`, `backend` and `clients` or `tls`, `metrics` and `proxy`).
//!
//! [`acl`] holds the users clients log in as and the permission check a restricted user's
//! requests pass before anything else. [`config`] holds the typed configuration, [`proxy`] the
//! state sessions share with the [`proxy::Snapshot`] of the configuration in force (its users
//! among it), [`reload`] puts a new configuration in force without dropping a client,
//! [`metrics`] has the metric names and handles, [`health`] whether the proxy is ready,
//! [`errorstats`] the error replies its clients got, [`pause`] the `CLIENT PAUSE` its
//! clients' commands wait behind,
//! [`slowlog`] the slowest requests, [`subscribers`] what the subscribed clients hold
//! (for `PUBLISH`'s count), [`admin`] the `/metrics`, `/ready`, `/live`, `/topology`,
//! `/config` and `/reload` endpoints.
//! [`migrate`] holds the groundwork of moving a prefix between backends online: its phases,
//! the leases that keep replicas in step, and where its state is stored.
//! [`tls`] loads, and reads again when they change, the certificates of the TLS listener and
//! of TLS backends. [`tracking`] is client-side caching through the proxy: which client read
//! which key, the watchers that hear of every change from the nodes, and the invalidations
//! sent to clients.

pub mod acl;
pub mod admin;
pub mod announce;
pub mod backend;
pub mod broadcast;
pub mod clients;
pub mod cluster;
pub mod combine;
pub mod command;
pub mod config;
pub mod errorstats;
pub mod fanout;
pub mod health;
pub mod keyspace;
pub mod metrics;
pub mod migrate;
pub mod multikey;
pub mod pause;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod session;
pub mod slot;
pub mod slowlog;
pub mod subscribers;
pub mod tls;
pub mod tracking;
pub mod workers;

pub use config::Config;
pub use server::{Listeners, bind, run, run_with, serve};
