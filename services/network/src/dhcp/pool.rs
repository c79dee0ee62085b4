//! Dynamic addresses: the blocks of each network's dynamic range this agent holds, and the leases
//! it gave out of them.
//!
//! Blocks are claimed through the api (`NetbootConfig.Blocks`), which gives each block to one agent
//! at a time: two agents on a segment never offer the same dynamic address. Leases are appended to
//! a log file as they change and replayed at start, so a restart does not hand out an address that
//! is in use. The log is rewritten with only the live entries when the agent starts.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use xcat3_types::{IpRange, MacAddr};

/// How long an offered address is held for the client's REQUEST.
pub const OFFER_HOLD_MS: i64 = 60_000;
/// How long a declined address is kept out of use.
pub const DECLINE_HOLD_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub expires_ms: i64,
    pub bound: bool,
}

#[derive(Debug, Default)]
struct NetPool {
    /// Held blocks with their expiry, sorted by first address (blocks never overlap).
    blocks: Vec<(IpRange, i64)>,
    /// Addresses in live blocks, counted again at `held_until` (the first expiry) or when the
    /// blocks change: an offer must not walk thousands of blocks to know how many it holds.
    held: u64,
    held_until: i64,
    /// No claim is asked for before this time: the last one brought no new block (the dynamic
    /// range is used up), and asking again on every DISCOVER would only load the api.
    quiet_until: i64,
    by_mac: HashMap<MacAddr, Lease>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    declined: HashMap<Ipv4Addr, i64>,
    /// Set when addresses run low: the block claimer asks for more.
    wants_block: bool,
    /// New addresses handed out, per second: how much a claim must cover.
    demand: Demand,
    /// Where the search for a free address starts (the one after the last given), so handing out
    /// addresses in order costs O(1) each instead of a scan from the start.
    cursor: u32,
}

/// New addresses given out in the current second and the one before.
#[derive(Debug, Default, Clone, Copy)]
struct Demand {
    second: i64,
    this: u64,
    last: u64,
}

impl Demand {
    fn count(&mut self, now: i64) {
        let second = now.div_euclid(1000);
        if second != self.second {
            self.last = if second == self.second + 1 {
                self.this
            } else {
                0
            };
            self.this = 0;
            self.second = second;
        }
        self.this += 1;
    }

    /// New addresses per second lately.
    fn rate(&self, now: i64) -> u64 {
        match now.div_euclid(1000) - self.second {
            0 => self.this.max(self.last),
            1 => self.this,
            _ => 0,
        }
    }
}

/// Seconds of demand a claim covers, and how many seconds' worth left make the agent ask again:
/// a claim takes a round trip to the api and a database write, so the agent asks while it still
/// has a second of addresses, for two more seconds.
const CLAIM_COVERS_SECS: u64 = 2;
const ASK_WHEN_LEFT_SECS: u64 = 1;

impl NetPool {
    fn owns(&self, ip: Ipv4Addr, now: i64) -> bool {
        let after = self.blocks.partition_point(|(r, _)| r.start <= ip);
        after > 0 && {
            let (r, valid) = self.blocks[after - 1];
            valid > now && r.contains(ip)
        }
    }

    /// Sorts the blocks after a change and has [`NetPool::held`] count them again.
    fn blocks_changed(&mut self) {
        self.blocks.sort_unstable_by_key(|(r, _)| r.start);
        self.held_until = i64::MIN;
    }

    /// Addresses in the live blocks.
    fn held(&mut self, now: i64) -> u64 {
        if now >= self.held_until {
            let live = || self.blocks.iter().filter(|(_, valid)| *valid > now);
            self.held = live().map(|(r, _)| r.len()).sum();
            self.held_until = live().map(|(_, valid)| *valid).min().unwrap_or(i64::MAX);
        }
        self.held
    }

    fn is_free(&self, ip: Ipv4Addr, mac: MacAddr, now: i64) -> bool {
        if self.declined.get(&ip).is_some_and(|until| *until > now) {
            return false;
        }
        match self.by_ip.get(&ip) {
            None => true,
            Some(m) if *m == mac => true,
            Some(m) => self.by_mac.get(m).is_none_or(|l| l.expires_ms <= now),
        }
    }

    fn put(&mut self, lease: Lease) {
        if let Some(old) = self.by_mac.insert(lease.mac, lease)
            && old.ip != lease.ip
            && self.by_ip.get(&old.ip) == Some(&lease.mac)
        {
            self.by_ip.remove(&old.ip);
        }
        if let Some(prev) = self.by_ip.insert(lease.ip, lease.mac)
            && prev != lease.mac
        {
            self.by_mac.remove(&prev);
        }
    }

    fn remove(&mut self, mac: MacAddr) -> Option<Lease> {
        let lease = self.by_mac.remove(&mac)?;
        if self.by_ip.get(&lease.ip) == Some(&mac) {
            self.by_ip.remove(&lease.ip);
        }
        Some(lease)
    }
}

/// Every network's dynamic leases, with the log that persists them.
#[derive(Debug, Default)]
pub struct Pool {
    nets: HashMap<String, NetPool>,
    log: Option<File>,
}

impl Pool {
    /// A pool that keeps nothing on disk (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Opens the lease log at `path`, replays it and rewrites it with the live entries.
    pub fn open(path: &Path, now: i64) -> std::io::Result<Self> {
        let mut pool = Pool::default();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                pool.replay(&line?);
            }
        }
        for net in pool.nets.values_mut() {
            net.blocks.retain(|(_, valid)| *valid > now);
            // Sorted once here, not after each replayed line.
            net.blocks_changed();
            let dead: Vec<MacAddr> = net
                .by_mac
                .values()
                .filter(|l| l.expires_ms <= now)
                .map(|l| l.mac)
                .collect();
            for mac in dead {
                net.remove(mac);
            }
            net.declined.retain(|_, until| *until > now);
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            for (name, net) in &pool.nets {
                for (r, valid) in &net.blocks {
                    writeln!(f, "block {name} {} {} {valid}", r.start, r.end)?;
                }
                for l in net.by_mac.values().filter(|l| l.bound) {
                    writeln!(f, "bind {name} {} {} {}", l.mac, l.ip, l.expires_ms)?;
                }
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        pool.log = Some(OpenOptions::new().append(true).open(path)?);
        Ok(pool)
    }

    fn replay(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["block", net, first, last, valid] => {
                if let (Ok(start), Ok(end), Ok(valid)) =
                    (first.parse(), last.parse(), valid.parse::<i64>())
                {
                    let pool = self.nets.entry((*net).to_owned()).or_default();
                    let range = IpRange { start, end };
                    pool.blocks.retain(|(r, _)| *r != range);
                    pool.blocks.push((range, valid));
                }
            }
            ["bind", net, mac, ip, expires] => {
                if let (Ok(mac), Ok(ip), Ok(expires_ms)) =
                    (mac.parse(), ip.parse(), expires.parse())
                {
                    self.nets.entry((*net).to_owned()).or_default().put(Lease {
                        mac,
                        ip,
                        expires_ms,
                        bound: true,
                    });
                }
            }
            ["free", net, mac] => {
                if let (Some(pool), Ok(mac)) = (self.nets.get_mut(*net), mac.parse()) {
                    pool.remove(mac);
                }
            }
            _ => tracing::warn!(line, "ignoring an unreadable line of the lease log"),
        }
    }

    /// Appends one line with a single write (an unbuffered `writeln!` would make one system call
    /// per formatted piece).
    fn append(&mut self, line: std::fmt::Arguments<'_>) {
        if let Some(f) = &mut self.log
            && let Err(e) = f.write_all(format!("{line}\n").as_bytes())
        {
            tracing::error!(error = %e, "writing the lease log failed");
        }
    }

    /// Replaces the blocks held in `net` (as the api last confirmed them).
    /// Only new blocks, and renewals that move the expiry by more than a minute, are logged.
    pub fn set_blocks(&mut self, net: &str, blocks: Vec<(IpRange, i64)>) {
        let known: HashMap<IpRange, i64> = self
            .nets
            .get(net)
            .map(|p| p.blocks.iter().copied().collect())
            .unwrap_or_default();
        let mut lines = String::new();
        for (r, valid) in &blocks {
            if known.get(r).is_none_or(|old| (valid - old).abs() > 60_000) {
                lines.push_str(&format!("block {net} {} {} {valid}\n", r.start, r.end));
            }
        }
        if !lines.is_empty() {
            self.append(format_args!("{}", lines.trim_end()));
        }
        let pool = self.nets.entry(net.to_owned()).or_default();
        pool.blocks = blocks;
        pool.blocks_changed();
        pool.wants_block = false;
    }

    /// Asks for no more blocks in `net` before `until` (the last claim brought none).
    pub fn hold_wishes(&mut self, net: &str, until: i64) {
        let pool = self.nets.entry(net.to_owned()).or_default();
        pool.quiet_until = until;
        pool.wants_block = false;
    }

    /// Networks running low on addresses since the last call, with how many addresses a claim
    /// should bring to cover the demand seen ([`CLAIM_COVERS_SECS`] of it).
    pub fn take_block_wishes(&mut self, now: i64) -> Vec<(String, u64)> {
        self.nets
            .iter_mut()
            .filter(|(_, p)| p.wants_block)
            .map(|(name, p)| {
                p.wants_block = false;
                (name.clone(), p.demand.rate(now) * CLAIM_COVERS_SECS)
            })
            .collect()
    }

    /// Whether some network ran out of addresses since the last [`Pool::take_block_wishes`].
    pub fn wishes_empty(&self) -> bool {
        !self.nets.values().any(|p| p.wants_block)
    }

    /// Networks this pool holds blocks in.
    pub fn networks(&self) -> Vec<String> {
        self.nets.keys().cloned().collect()
    }

    /// The current lease of `mac` in `net`, if live.
    pub fn lease(&self, net: &str, mac: MacAddr, now: i64) -> Option<Lease> {
        self.nets
            .get(net)?
            .by_mac
            .get(&mac)
            .filter(|l| l.expires_ms > now)
            .copied()
    }

    /// Picks an address for `mac` in `range` (the network's dynamic range) and holds it as an
    /// offer: its current lease, else the address it asked for, else the first free one of this
    /// agent's blocks. `reserved` tells addresses the inventory gives to nodes.
    pub fn offer(
        &mut self,
        net: &str,
        range: IpRange,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        reserved: &dyn Fn(Ipv4Addr) -> bool,
        now: i64,
    ) -> Option<Ipv4Addr> {
        let pool = self.nets.entry(net.to_owned()).or_default();
        let free = |p: &NetPool, ip: Ipv4Addr| {
            range.contains(ip) && p.is_free(ip, mac, now) && !reserved(ip)
        };
        let usable = |p: &NetPool, ip: Ipv4Addr| p.owns(ip, now) && free(p, ip);
        let current = pool.by_mac.get(&mac).map(|l| l.ip);
        let cursor = pool.cursor;
        let kept = current
            .filter(|ip| usable(pool, *ip))
            .or_else(|| requested.filter(|ip| usable(pool, *ip)));
        let scanned = kept
            .is_none()
            .then(|| {
                // The live blocks from the cursor on, then from the start; ownership is implied.
                let live = |(r, valid): &(IpRange, i64)| {
                    (*valid > now).then(|| (u32::from(r.start), u32::from(r.end)))
                };
                let first = pool
                    .blocks
                    .partition_point(|(r, _)| u32::from(r.end) < cursor);
                let after = pool.blocks[first..]
                    .iter()
                    .filter_map(live)
                    .flat_map(|(start, end)| start.max(cursor)..=end);
                let before = pool.blocks[..first]
                    .iter()
                    .chain(pool.blocks.get(first))
                    .filter_map(live)
                    .filter(|(start, _)| *start < cursor)
                    .flat_map(|(start, end)| start..=end.min(cursor.saturating_sub(1)));
                after
                    .chain(before)
                    .map(Ipv4Addr::from)
                    .find(|ip| free(pool, *ip))
            })
            .flatten();
        let pick = kept.or(scanned);
        let quiet = now < pool.quiet_until;
        let Some(ip) = pick else {
            pool.wants_block = !quiet;
            return None;
        };
        if current != Some(ip) {
            pool.demand.count(now);
        }
        // Ask for more before running out: when half of what is held is in use, or less than a
        // second of the current demand is left (at 12,000 new machines a second, 1,024
        // addresses last 85 ms).
        let held = pool.held(now);
        let used = pool.by_mac.len() as u64 + 1;
        let left = held.saturating_sub(used);
        if !quiet && (used * 2 >= held || left < pool.demand.rate(now) * ASK_WHEN_LEFT_SECS) {
            pool.wants_block = true;
        }
        // Only a search moves the cursor: a client keeping its address somewhere behind it must
        // not send the next search back over every address given since (a run with 40,000
        // clients spent most of its time there).
        if scanned.is_some() {
            pool.cursor = u32::from(ip).wrapping_add(1);
        }
        let bound = pool.by_mac.get(&mac).is_some_and(|l| l.bound && l.ip == ip);
        let expires_ms = pool
            .by_mac
            .get(&mac)
            .filter(|_| bound)
            .map_or(now + OFFER_HOLD_MS, |l| {
                l.expires_ms.max(now + OFFER_HOLD_MS)
            });
        pool.put(Lease {
            mac,
            ip,
            expires_ms,
            bound,
        });
        Some(ip)
    }

    /// Binds `ip` to `mac` for `secs` (a REQUEST for it), if this agent may give it out.
    #[allow(clippy::too_many_arguments)] // the same inputs as `offer`, plus the lease
    pub fn bind(
        &mut self,
        net: &str,
        range: IpRange,
        mac: MacAddr,
        ip: Ipv4Addr,
        secs: u32,
        reserved: &dyn Fn(Ipv4Addr) -> bool,
        now: i64,
    ) -> bool {
        let Some(pool) = self.nets.get_mut(net) else {
            return false;
        };
        let mine = pool
            .by_mac
            .get(&mac)
            .is_some_and(|l| l.ip == ip && l.expires_ms > now);
        // A lease we hold keeps being renewable even if its block was lost; a new one needs a block.
        if !(mine || range.contains(ip) && pool.owns(ip, now) && pool.is_free(ip, mac, now))
            || reserved(ip)
        {
            return false;
        }
        let expires_ms = now + i64::from(secs) * 1000;
        pool.put(Lease {
            mac,
            ip,
            expires_ms,
            bound: true,
        });
        self.append(format_args!("bind {net} {mac} {ip} {expires_ms}"));
        true
    }

    /// Forgets the lease of `mac` (RELEASE, or an offer the client did not take).
    pub fn release(&mut self, net: &str, mac: MacAddr) {
        let bound = self
            .nets
            .get_mut(net)
            .and_then(|p| p.remove(mac))
            .is_some_and(|l| l.bound);
        if bound {
            self.append(format_args!("free {net} {mac}"));
        }
    }

    /// Keeps `ip` out of use for a while (a DECLINE: something else answers at that address).
    pub fn decline(&mut self, net: &str, mac: MacAddr, ip: Ipv4Addr, now: i64) {
        self.release(net, mac);
        if let Some(pool) = self.nets.get_mut(net) {
            pool.declined.insert(ip, now + DECLINE_HOLD_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn many_mac(n: u32) -> MacAddr {
        let [_, b, c, d] = n.to_be_bytes();
        MacAddr([0x52, 0x55, 0, b, c, d])
    }

    /// 10.1.0.0 + `a` ..= + `b`.
    fn wide(a: u32, b: u32) -> IpRange {
        let base = u32::from(Ipv4Addr::new(10, 1, 0, 0));
        IpRange {
            start: Ipv4Addr::from(base + a),
            end: Ipv4Addr::from(base + b),
        }
    }

    fn range(a: u8, b: u8) -> IpRange {
        IpRange {
            start: Ipv4Addr::new(10, 0, 0, a),
            end: Ipv4Addr::new(10, 0, 0, b),
        }
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn offers_only_from_held_blocks_and_asks_for_more() {
        let mut p = Pool::in_memory();
        let none = |_| false;
        assert_eq!(
            p.offer("n", range(100, 200), mac(1), None, &none, NOW),
            None
        );
        assert_eq!(p.take_block_wishes(NOW), vec![("n".to_owned(), 0)]);
        p.set_blocks("n", vec![(range(100, 101), NOW + 10_000)]);
        let a = p
            .offer("n", range(100, 200), mac(1), None, &none, NOW)
            .unwrap();
        let b = p
            .offer("n", range(100, 200), mac(2), None, &none, NOW)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            p.offer("n", range(100, 200), mac(3), None, &none, NOW),
            None
        );
        // The same client gets the same address again.
        assert_eq!(
            p.offer("n", range(100, 200), mac(1), None, &none, NOW),
            Some(a)
        );
    }

    #[test]
    fn claims_follow_demand_and_come_before_the_pool_runs_dry() {
        let mut p = Pool::in_memory();
        let none = |_| false;
        // 4,096 addresses held; 2,100 new machines within 700 ms: more than half is in use, so
        // the agent asks for more, enough for two seconds of this demand, before any machine
        // had to be refused.
        p.set_blocks("n", vec![(wide(0, 4095), NOW + 60_000)]);
        for i in 0..2100u32 {
            let at = NOW + i64::from(i) / 3;
            assert!(
                p.offer("n", wide(0, 65535), many_mac(i), None, &none, at)
                    .is_some()
            );
        }
        assert_eq!(p.take_block_wishes(NOW + 700), vec![("n".to_owned(), 4200)]);
        // The same machines again (renewals) are no new demand.
        for i in 0..2100u32 {
            p.offer("n", wide(0, 65535), many_mac(i), None, &none, NOW + 3000);
        }
        assert_eq!(p.nets["n"].demand.rate(NOW + 3000), 0);
    }

    /// The whole dynamic range is held and half of it used: every offer would ask for more,
    /// and the claimer would call the api on every DISCOVER (a run at 4,000 new machines a second
    /// lost 45 % of them this way). After a claim that brought nothing the agent stays quiet.
    #[test]
    fn a_used_up_range_is_not_claimed_on_every_offer() {
        let mut p = Pool::in_memory();
        let none = |_| false;
        p.set_blocks(
            "n",
            vec![(wide(0, 15), NOW + 60_000), (wide(16, 31), NOW + 60_000)],
        );
        for i in 0..20u32 {
            p.offer("n", wide(0, 31), many_mac(i), None, &none, NOW);
        }
        assert!(!p.wishes_empty(), "more than half in use: asks");
        p.hold_wishes("n", NOW + 5_000);
        for i in 20..40u32 {
            p.offer("n", wide(0, 31), many_mac(i), None, &none, NOW + 1);
        }
        assert!(p.wishes_empty(), "quiet, even when an offer fails");
        p.offer("n", wide(0, 31), many_mac(99), None, &none, NOW + 5_000);
        assert!(!p.wishes_empty(), "asks again later");
    }

    /// After a client renews an old address, the search for the next new client goes on after
    /// the last address given; it used to restart right after the renewed address and walk every
    /// address given since (here it would have found the released address 7 first).
    #[test]
    fn a_renewal_does_not_move_the_search_back() {
        let mut p = Pool::in_memory();
        let none = |_| false;
        p.set_blocks("n", vec![(wide(0, 1023), NOW + 60_000)]);
        for i in 0..500u32 {
            p.offer("n", wide(0, 1023), many_mac(i), None, &none, NOW);
        }
        p.release("n", many_mac(7));
        assert_eq!(
            p.offer("n", wide(0, 1023), many_mac(3), None, &none, NOW),
            Some(wide(3, 3).start)
        );
        assert_eq!(p.nets["n"].cursor, u32::from(wide(500, 500).start));
        assert_eq!(
            p.offer("n", wide(0, 1023), many_mac(1000), None, &none, NOW),
            Some(wide(500, 500).start)
        );
    }

    #[test]
    fn blocks_in_any_order_are_searched_from_the_cursor() {
        let mut p = Pool::in_memory();
        let none = |_| false;
        // Given out of order, one expired: offers walk them in address order, skipping it.
        p.set_blocks(
            "n",
            vec![
                (wide(32, 33), NOW + 60_000),
                (wide(0, 1), NOW + 60_000),
                (wide(16, 17), NOW - 1),
            ],
        );
        let got: Vec<Option<Ipv4Addr>> = (0..5u32)
            .map(|i| p.offer("n", wide(0, 63), many_mac(i), None, &none, NOW))
            .collect();
        let want = [Some(0), Some(1), Some(32), Some(33), None];
        let want: Vec<Option<Ipv4Addr>> =
            want.iter().map(|o| o.map(|a| wide(a, a).start)).collect();
        assert_eq!(got, want);
        // A released address before the cursor is found again.
        p.release("n", many_mac(1));
        assert_eq!(
            p.offer("n", wide(0, 63), many_mac(9), None, &none, NOW),
            Some(wide(1, 1).start)
        );
        assert!(p.nets["n"].owns(wide(33, 33).start, NOW));
        assert!(!p.nets["n"].owns(wide(16, 16).start, NOW));
        assert!(!p.nets["n"].owns(wide(2, 2).start, NOW));
    }

    #[test]
    fn reserved_and_declined_addresses_are_skipped() {
        let mut p = Pool::in_memory();
        p.set_blocks("n", vec![(range(100, 103), NOW + 10_000)]);
        let reserved = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 100);
        let a = p
            .offer("n", range(100, 200), mac(1), None, &reserved, NOW)
            .unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 101));
        p.decline("n", mac(1), a, NOW);
        let b = p
            .offer("n", range(100, 200), mac(1), None, &reserved, NOW)
            .unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 0, 0, 102));
    }

    #[test]
    fn bound_leases_survive_a_restart_and_released_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let none = |_| false;
        let (a, b) = {
            let mut p = Pool::open(&path, NOW).unwrap();
            p.set_blocks("n", vec![(range(100, 115), NOW + 100_000)]);
            let a = p
                .offer("n", range(100, 200), mac(1), None, &none, NOW)
                .unwrap();
            assert!(p.bind("n", range(100, 200), mac(1), a, 3600, &none, NOW));
            let b = p
                .offer("n", range(100, 200), mac(2), None, &none, NOW)
                .unwrap();
            assert!(p.bind("n", range(100, 200), mac(2), b, 3600, &none, NOW));
            p.release("n", mac(2));
            (a, b)
        };
        let mut p = Pool::open(&path, NOW + 1).unwrap();
        assert_eq!(p.lease("n", mac(1), NOW + 1).map(|l| l.ip), Some(a));
        assert_eq!(p.lease("n", mac(2), NOW + 1), None);
        // A new client never gets the address still leased to mac(1).
        let c = p
            .offer("n", range(100, 200), mac(3), None, &none, NOW + 1)
            .unwrap();
        assert_ne!(c, a);
        assert_eq!(c, b);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the lease log is private whatever the umask");
    }

    #[test]
    fn expired_blocks_give_nothing_new() {
        let mut p = Pool::in_memory();
        let none = |_| false;
        p.set_blocks("n", vec![(range(100, 115), NOW - 1)]);
        assert_eq!(
            p.offer("n", range(100, 200), mac(1), None, &none, NOW),
            None
        );
    }
}
