//! sea-orm entities. Private to the store: nothing outside this crate sees a row type.

pub(crate) mod deploy;
pub(crate) mod discovered;
pub(crate) mod dynamic_block;
pub(crate) mod network;
pub(crate) mod nic;
pub(crate) mod node;
pub(crate) mod node_event;
pub(crate) mod osimage;
pub(crate) mod passwd;
pub(crate) mod service;
pub(crate) mod shard;
