//! The one integration test binary: each module covers one layer, driven as a user would.

mod apply;
mod apply_cli;
mod common;
mod control_plane;
mod docs;
mod fakeapi;
mod gitops;
mod install;
mod lifecycle;
mod render;
mod safety;
mod ux;
