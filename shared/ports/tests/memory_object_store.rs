//! The `ObjectStore` contract against `MemoryObjectStore`, the fake scenario tests use: it
//! must keep the same promises as S3 and the file-system store, or scenario tests would
//! prove things about a store that does not exist.

#![allow(clippy::unwrap_used)]

use nodefleet_ports::fakes::MemoryObjectStore;

nodefleet_ports::object_store_contract!(async { MemoryObjectStore::new() });
