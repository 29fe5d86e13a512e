//! The one integration test binary: each module covers one layer, driven as a user would.

mod common;
mod gitops;
mod install;
mod render;
