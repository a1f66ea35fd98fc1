//! The conformance suite on `mem://`, the reference transport.

use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_mem::{MemBus, MemOptions};

/// Each case gets a private bus, so cases cannot see each other's traffic.
#[derive(Default)]
struct Mem(MemBus, MemOptions);

impl Harness for Mem {
    fn name(&self) -> &'static str {
        "mem"
    }

    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>> {
        Box::pin(async move { Ok(self.0.connect_with(options, self.1)) })
    }

    fn crash<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.0.disconnect(conn.client_id()) })
    }
}

busbar_conformance::suite!(async { Some(Mem::default()) });

/// The same suite with every payload serialised, the path every broker transport takes.
mod serialized {
    use super::*;
    busbar_conformance::suite!(async {
        Some(Mem(MemBus::new(), MemOptions { serialize_always: true }))
    });
}
