//! The glue [`export_agent!`](crate::export_agent) expands to: the module's input and
//! output buffers and the calls the host makes (ABI v1).
//!
//! The host calls `clpe_alloc(len)` for a buffer, writes a message into it, then
//! `clpe_init(ptr, len)` (once per instance, with the config as JSON) or
//! `clpe_decide(ptr, len)` (once per decision). Both answer with a packed
//! `(ptr << 32) | len` of their output; `clpe_init` answers 0 when it succeeded. The
//! buffer stays valid until the next `clpe_alloc`, and the host reuses it for every
//! message that fits, so most decisions make no `clpe_alloc` call.
//!
//! The buffers are the guest's own `Vec`s, so reading the input needs no pointer
//! arithmetic: the host wrote into the buffer `clpe_alloc` handed out.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::input::Input;
use crate::reply::Reply;

/// A policy agent: built from its config, then asked to decide, once per event.
///
/// An instance of the module may be reused for many decisions, or replaced by a fresh
/// one at any time (after a failure, or when the host needs one more): keep no state
/// that a decision depends on.
pub trait Agent: Sized + 'static {
    /// Builds the agent from the WasmAgent's `spec.config` (`null` when it has none).
    /// An `Err` refuses the document at apply time, with this message.
    fn new(config: serde_json::Value) -> Result<Self, String>;

    /// Decides on one event. The reply may borrow from the input.
    fn decide<'a>(&mut self, input: &Input<'a>) -> Reply<'a>;
}

struct Io {
    input: Vec<u8>,
    output: Vec<u8>,
}

thread_local! {
    static IO: RefCell<Io> = const { RefCell::new(Io { input: Vec::new(), output: Vec::new() }) };
}

/// `(ptr << 32) | len`, as `clpe_init` and `clpe_decide` return it.
pub fn pack(ptr: u32, len: u32) -> u64 {
    (u64::from(ptr) << 32) | u64::from(len)
}

fn address(bytes: &[u8]) -> u32 {
    // INVARIANT: on wasm32 a pointer is 32 bits; on a 64-bit host this only serves tests.
    bytes.as_ptr() as usize as u32
}

/// `clpe_alloc(len)`: a zeroed input buffer of `len` bytes.
pub fn alloc(len: u32) -> u32 {
    IO.with_borrow_mut(|io| {
        io.input.clear();
        io.input.resize(len as usize, 0);
        address(&io.input)
    })
}

fn answer(output: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    output.clear();
    output.extend_from_slice(bytes);
    pack(address(output), output.len() as u32)
}

/// `clpe_init(ptr, len)`: builds the agent from its config; 0, or the packed error text.
pub fn init<A: Agent>(slot: &'static LocalKey<RefCell<Option<A>>>, ptr: u32, len: u32) -> u64 {
    IO.with_borrow_mut(|io| {
        let Io { input, output } = io;
        if ptr != address(input) || len as usize > input.len() {
            return answer(
                output,
                b"clpe_init: the config is not in the buffer clpe_alloc gave",
            );
        }
        let bytes = input.get(..len as usize).unwrap_or(&[]);
        let config = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(bytes) {
                Ok(v) => v,
                Err(e) => return answer(output, format!("the config is not JSON: {e}").as_bytes()),
            }
        };
        match A::new(config) {
            Ok(agent) => {
                slot.with_borrow_mut(|s| *s = Some(agent));
                0
            }
            Err(m) if m.is_empty() => answer(output, b"the agent refused its config"),
            Err(m) => answer(output, m.as_bytes()),
        }
    })
}

/// Decodes one input, asks the agent and encodes its reply into `out`: the whole of a
/// decision, without the buffers (so it can be tested on the host).
pub fn run<A: Agent>(agent: Option<&mut A>, input: &[u8], out: &mut Vec<u8>) {
    let reply = match (Input::decode(input), agent) {
        (Ok(input), Some(agent)) => agent.decide(&input),
        (Ok(_), None) => Reply::fail("clpe_decide before clpe_init: the agent has no config"),
        (Err(e), _) => Reply::fail(format!("cannot decode the input: {e}")),
    };
    reply.encode(out);
}

/// `clpe_decide(ptr, len)`: the packed reply.
pub fn decide<A: Agent>(slot: &'static LocalKey<RefCell<Option<A>>>, ptr: u32, len: u32) -> u64 {
    IO.with_borrow_mut(|io| {
        let Io { input, output } = io;
        let bytes = if ptr == address(input) {
            input.get(..len as usize).unwrap_or(&[])
        } else {
            &[]
        };
        slot.with_borrow_mut(|agent| run(agent.as_mut(), bytes, output));
        pack(address(output), output.len() as u32)
    })
}
