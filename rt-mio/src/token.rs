//! `mio::Token`s: which listener, or which side of which session, an event is for.
//!
//! A session token packs the session's slab slot, its generation and the side (client or
//! upstream). Slots are reused once a session ends, so an event or resolver answer that was
//! already on its way when its session closed carries an old generation and is ignored.

use egret_core::Peer;
use mio::Token;

/// The worker's waker: resolver answers, shutdown, freed capacity.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Bits for the slab slot: 16 M sessions per worker on 64-bit targets.
const SLOT_BITS: u32 = if usize::BITS >= 64 { 24 } else { 16 };
/// Bits for the generation: everything but the side bit, the slot and the top bit, which
/// marks the waker and listener tokens.
const GENERATION_BITS: u32 = usize::BITS - SLOT_BITS - 2;

/// The most sessions one worker can hold at once.
pub(crate) const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// What an event's token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The waker.
    Waker,
    /// The listener at this index.
    Listener(usize),
    /// One side of a session.
    Session {
        slot: usize,
        generation: usize,
        peer: Peer,
    },
}

/// Returns the token of the listener at `index`.
pub(crate) fn listener(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

/// Returns the token of `peer`'s socket in the session at `slot` with `generation`.
pub(crate) fn session(slot: usize, generation: usize, peer: Peer) -> Token {
    debug_assert!(slot < MAX_SLOTS && generation <= generation_mask());
    let side = match peer {
        Peer::Client => 0,
        Peer::Upstream => 1,
    };
    Token((generation << (SLOT_BITS + 1)) | (slot << 1) | side)
}

/// Returns the generation that follows `generation`, wrapping within the token's bits.
pub(crate) fn next_generation(generation: usize) -> usize {
    generation.wrapping_add(1) & generation_mask()
}

/// Returns what `token` names.
pub(crate) fn decode(token: Token) -> Target {
    let Token(raw) = token;
    if raw == WAKER.0 {
        return Target::Waker;
    }
    if raw >> (usize::BITS - 1) == 1 {
        return Target::Listener(usize::MAX - 1 - raw);
    }
    let peer = match raw & 1 {
        0 => Peer::Client,
        _ => Peer::Upstream,
    };
    Target::Session {
        slot: (raw >> 1) & (MAX_SLOTS - 1),
        generation: raw >> (SLOT_BITS + 1),
        peer,
    }
}

const fn generation_mask() -> usize {
    (1 << GENERATION_BITS) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for (slot, generation, peer) in [
            (0, 0, Peer::Client),
            (7, 3, Peer::Upstream),
            (MAX_SLOTS - 1, generation_mask(), Peer::Upstream),
            (MAX_SLOTS - 1, generation_mask(), Peer::Client),
        ] {
            let target = decode(session(slot, generation, peer));
            assert_eq!(
                target,
                Target::Session {
                    slot,
                    generation,
                    peer
                }
            );
        }
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(listener(0)), Target::Listener(0));
        assert_eq!(decode(listener(5)), Target::Listener(5));
    }

    #[test]
    fn generations_wrap_inside_the_token() {
        assert_eq!(next_generation(generation_mask()), 0);
        assert_eq!(next_generation(1), 2);
    }
}
