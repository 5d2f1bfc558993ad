//! Test support shared by the integration tests.
#![allow(dead_code)]

pub mod chaos;
pub mod cluster;
pub mod etcd;
pub mod etcdctl;
pub mod linearizability;
pub mod lines;
pub mod load;
pub mod proxy;
pub mod sim;
