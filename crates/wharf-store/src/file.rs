//! The file store (to be written): see the crate docs.
