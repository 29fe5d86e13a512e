//! The one integration test binary: each module covers one layer, driven as a user would.

mod apply;
mod apply_cli;
mod common;
mod control_plane;
mod copies;
mod digest;
mod docs;
mod events;
mod fakeapi;
mod gitops;
mod harden;
mod install;
mod install_cli;
mod lease;
mod lifecycle;
mod model;
mod render;
mod safety;
mod spec_schema;
mod switch;
mod ux;
mod verify;
