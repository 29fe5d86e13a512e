//! The one integration test binary: each module covers one layer, driven as a user would.

mod apply;
mod common;
mod docs;
mod fakeapi;
mod gitops;
mod harden;
mod install;
mod lifecycle;
mod render;
