//! `kubectl tessera`: what Tessera's status fields say, at a glance. The views (`view`) are
//! built from a CitusCluster and its Microservices and the renderers (`render`) turn them into
//! text for a terminal of a given width, with or without colour; both are pure, and tested with
//! golden outputs.

pub mod render;
pub mod style;
pub mod view;
