//! Egret's conformance suite.
