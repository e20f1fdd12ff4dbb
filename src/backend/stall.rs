//! Noticing a node that has stopped answering: commands wait on a connection and no reply
//! comes through a whole look. A stall asks for the topology again (a failover may be under
//! way), and a connection whose node left the topology gives up on a stalled node at once.

/// What the last looks at a connection's queue saw.
#[derive(Debug, Default)]
pub(super) struct Silence {
    /// How many replies had been read at the last look, if commands were waiting then.
    answered: Option<u64>,
    /// Whether the last look found commands that had waited through a whole look unanswered.
    stalled: bool,
}

impl Silence {
    /// Takes a look: `now` is how many replies have been read, if commands wait. True when
    /// they waited through the whole time since the last look with no reply read.
    pub(super) fn look(&mut self, now: Option<u64>) -> bool {
        self.stalled = now.is_some() && now == self.answered;
        self.answered = now;
        self.stalled
    }

    /// Whether the node was stalled at the last look and has answered nothing since.
    pub(super) fn still(&self, now: Option<u64>) -> bool {
        self.stalled && now.is_some() && self.answered == now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_a_whole_look_with_commands_waiting_and_no_reply() {
        let mut silence = Silence::default();
        assert!(!silence.look(Some(3)), "first look: nothing to compare");
        assert!(silence.look(Some(3)), "no reply since the last look");
        assert!(silence.still(Some(3)));
        assert!(!silence.still(Some(4)), "a reply came since");
        assert!(!silence.look(Some(4)));
        assert!(!silence.look(None), "nothing waits");
        assert!(!silence.look(None));
    }
}
