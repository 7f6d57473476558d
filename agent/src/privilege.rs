//! What the agent is allowed to see: the capabilities a complete view needs and
//! which of them this process lacks, so that a partial view says why.
//!
//! Reading another user's `/proc/PID/fd` needs `CAP_SYS_PTRACE` (ptrace read access)
//! and `CAP_DAC_READ_SEARCH` (to search the directory); entering other network
//! namespaces (`--all-netns`) needs `CAP_SYS_ADMIN`. Root normally has all three; a
//! hardened unit or container may not.

/// A capability the agent may need: its bit in `CapEff` and its name.
const NEEDED: [(u32, &str, bool); 3] = [
    (2, "CAP_DAC_READ_SEARCH", false),
    (19, "CAP_SYS_PTRACE", false),
    (21, "CAP_SYS_ADMIN", true),
];

/// The capabilities this process lacks for a complete view, by name, from the text
/// of `/proc/self/status`; `all_netns` adds the one needed to enter namespaces.
pub fn missing(status: &str, all_netns: bool) -> Vec<String> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    NEEDED
        .iter()
        .filter(|(_, _, netns_only)| all_netns || !netns_only)
        .filter(|(bit, _, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name, _)| (*name).to_owned())
        .collect()
}

/// [`missing`] for this process (every capability, when the status cannot be read).
pub fn missing_here(all_netns: bool) -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    missing(&status, all_netns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_cap_eff() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(missing(root, true).is_empty());
        let nobody = "CapEff:\t0000000000000000\n";
        assert_eq!(
            missing(nobody, false),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
        );
        assert_eq!(missing(nobody, true).len(), 3);
        // CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only: namespaces need SYS_ADMIN.
        let ptrace = format!("CapEff:\t{:016x}\n", (1u64 << 19) | (1u64 << 2));
        assert!(missing(&ptrace, false).is_empty());
        assert_eq!(missing(&ptrace, true), ["CAP_SYS_ADMIN"]);
    }
}
