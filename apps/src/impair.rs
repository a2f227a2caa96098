//! zc-impair's impairment flags: the values (`1%`, `5ms`, `100mbit`,
//! `256KiB`, `20%:3ms`, `p,r,bad,good`), and the flags themselves, each for
//! both directions (`--loss 1%`) and for one (`--a2b-loss 1%`, `--b2a-loss 1%`;
//! a direction's own flag wins).

use clap::{Arg, ArgMatches, Command};
use zcstack_driver::impair::{GilbertElliott, ImpairConfig};

/// One impairment flag: name, value name, help.
struct Knob {
    name: &'static str,
    value: &'static str,
    help: &'static str,
}

const KNOBS: &[Knob] = &[
    Knob {
        name: "loss",
        value: "P",
        help: "random loss: probability per frame (1% or 0.01)",
    },
    Knob {
        name: "ge",
        value: "P,R[,BAD[,GOOD]]",
        help: "bursty loss, Gilbert-Elliott: P good->bad, R bad->good per frame, loss in the \
               bad state (default 100%) and in the good state (default 0%); netem's \
               `loss gemodel p r 1-h 1-k`. Mean burst 1/R frames",
    },
    Knob {
        name: "delay",
        value: "TIME",
        help: "one-way delay (5ms, 500us, 0.05s)",
    },
    Knob {
        name: "jitter",
        value: "TIME",
        help: "uniform jitter: delay ± TIME; it never reorders frames by itself",
    },
    Knob {
        name: "reorder",
        value: "P:TIME",
        help: "reordering: probability a frame waits TIME more and is overtaken (20%:3ms)",
    },
    Knob {
        name: "dup",
        value: "P",
        help: "duplication probability",
    },
    Knob {
        name: "corrupt",
        value: "P",
        help: "probability one bit of an IP frame, past the Ethernet header, is flipped \
               (checksums must catch it; ARP is left alone)",
    },
    Knob {
        name: "rate",
        value: "RATE",
        help: "bottleneck rate, Ethernet frame bytes (100mbit, 1gbit)",
    },
    Knob {
        name: "queue",
        value: "BYTES",
        help: "bottleneck queue; frames that do not fit are dropped (tail drop) \
               (default 256KiB; 64KiB, 1MiB, 1500)",
    },
    Knob {
        name: "limit",
        value: "FRAMES",
        help: "most frames held at once per direction (bottleneck and delay line; default 16384)",
    },
    Knob {
        name: "seed",
        value: "N",
        help: "seed of the direction's random choices (default: --seed, plus 1 for b2a)",
    },
];

/// Adds every impairment flag, for both directions and per direction.
pub fn add_flags(mut cmd: Command) -> Command {
    for prefix in ["", "a2b-", "b2a-"] {
        for k in KNOBS {
            if prefix.is_empty() && k.name == "seed" {
                continue; // the global --seed is the app's own flag
            }
            let long = format!("{prefix}{}", k.name);
            let help = match prefix {
                "" => format!("Both directions: {}", k.help),
                "a2b-" => format!("A to B only: like --{}", k.name),
                _ => format!("B to A only: like --{}", k.name),
            };
            cmd = cmd.arg(
                Arg::new(long.clone())
                    .long(long)
                    .value_name(k.value)
                    .help(help)
                    .hide(!prefix.is_empty() && k.name != "seed")
                    .help_heading("Impairments"),
            );
        }
    }
    cmd
}

/// The (A → B, B → A) impairments the flags ask for; `seed` is the global
/// seed (B → A uses `seed + 1` unless given its own). The error names the flag.
pub fn configs(m: &ArgMatches, seed: u64) -> Result<(ImpairConfig, ImpairConfig), String> {
    let a2b = config(m, "a2b-", seed)?;
    let b2a = config(m, "b2a-", seed.wrapping_add(1))?;
    Ok((a2b, b2a))
}

fn config(m: &ArgMatches, prefix: &str, seed: u64) -> Result<ImpairConfig, String> {
    // The direction's own flag, else the common one.
    let get = |name: &str| -> Option<(String, String)> {
        let own = format!("{prefix}{name}");
        if let Some(v) = m.get_one::<String>(&own) {
            return Some((own, v.clone()));
        }
        m.try_get_one::<String>(name)
            .ok()
            .flatten()
            .map(|v| (name.to_string(), v.clone()))
    };
    let flag_err = |flag: &str, e: String| format!("--{flag}: {e}");
    let mut c = ImpairConfig::new().seed(seed);
    if let Some((f, v)) = get("loss") {
        c = c.loss(parse_prob(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("ge") {
        c = c.gilbert_elliott(parse_ge(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("delay") {
        c = c.delay_us(parse_time_us(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("jitter") {
        c = c.jitter_us(parse_time_us(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("reorder") {
        let (p, us) = parse_reorder(&v).map_err(|e| flag_err(&f, e))?;
        c = c.reorder(p, us);
    }
    if let Some((f, v)) = get("dup") {
        c = c.duplicate(parse_prob(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("corrupt") {
        c = c.corrupt(parse_prob(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("rate") {
        c = c.rate_bps(parse_rate(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("queue") {
        c = c.queue_bytes(parse_size(&v).map_err(|e| flag_err(&f, e))?);
    }
    if let Some((f, v)) = get("limit") {
        let n = v
            .parse::<usize>()
            .map_err(|_| flag_err(&f, format!("{v:?} is not a frame count")))?;
        c = c.limit(n);
    }
    if let Some(v) = m.get_one::<String>(&format!("{prefix}seed")) {
        let s = v
            .parse::<u64>()
            .map_err(|_| flag_err(&format!("{prefix}seed"), format!("{v:?} is not a number")))?;
        c = c.seed(s);
    }
    let dir = if prefix == "a2b-" { "A to B" } else { "B to A" };
    c.validate().map_err(|e| format!("{dir}: {e}"))?;
    Ok(c)
}

/// `1%`, `0.5%`, `0.01`: a probability from 0 to 1.
pub fn parse_prob(s: &str) -> Result<f64, String> {
    let err = || format!("{s:?} is not a probability like 1% or 0.01");
    let p = match s.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| err())?,
    };
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s:?} is not from 0% to 100%"))
    }
}

/// `5ms`, `500us`, `0.05s`, `0`: microseconds.
pub fn parse_time_us(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a time like 5ms, 500us or 0.05s");
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let (num, scale) = if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e6)
    } else {
        return Err(err());
    };
    let v = num.trim().parse::<f64>().map_err(|_| err())?;
    if !(v >= 0.0 && v * scale <= 3.6e9) {
        return Err(format!("{s:?} must be from 0 to an hour"));
    }
    Ok((v * scale).round() as u64)
}

/// `100mbit`, `1gbit`, `500kbit`, `64000bit` (decimal, like tc): bits/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a rate like 100mbit or 1gbit");
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let t = t.strip_suffix("bit").ok_or_else(err)?;
    let (num, scale) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v = num.trim().parse::<f64>().map_err(|_| err())?;
    let bps = (v * scale).round();
    if !(1.0..=1e12).contains(&bps) {
        return Err(format!("{s:?} must be from 1bit to 1000gbit"));
    }
    Ok(bps as u64)
}

/// `256KiB`, `1MiB`, `64k`, `1500` (K, KiB: 1024; kB: 1000): bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a size like 256KiB, 1MiB or 1500");
    let t = s.trim();
    let units: [(&str, u64); 9] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("kB", 1000),
        ("MB", 1_000_000),
        ("K", 1 << 10),
        ("k", 1 << 10),
        ("M", 1 << 20),
        ("B", 1),
    ];
    let (num, scale) = units
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    let v = num.trim().parse::<f64>().map_err(|_| err())?;
    let b = (v * scale as f64).round();
    if !(0.0..=1e12).contains(&b) {
        return Err(err());
    }
    Ok(b as u64)
}

/// `20%:3ms`: the reordering probability and the extra delay.
pub fn parse_reorder(s: &str) -> Result<(f64, u64), String> {
    let (p, t) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PROBABILITY:TIME like 20%:3ms"))?;
    Ok((parse_prob(p)?, parse_time_us(t)?))
}

/// `P,R[,BAD[,GOOD]]`: Gilbert–Elliott parameters.
pub fn parse_ge(s: &str) -> Result<GilbertElliott, String> {
    let parts: Vec<&str> = s.split(',').collect();
    if !(2..=4).contains(&parts.len()) {
        return Err(format!("{s:?} is not P,R[,BAD[,GOOD]] like 1%,25%"));
    }
    Ok(GilbertElliott {
        p: parse_prob(parts[0])?,
        r: parse_prob(parts[1])?,
        loss_bad: parts
            .get(2)
            .map(|v| parse_prob(v))
            .transpose()?
            .unwrap_or(1.0),
        loss_good: parts
            .get(3)
            .map(|v| parse_prob(v))
            .transpose()?
            .unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_in_the_units_people_write() {
        assert_eq!(parse_prob("1%"), Ok(0.01));
        assert_eq!(parse_prob("0.1%"), Ok(0.001));
        assert_eq!(parse_prob("0.2"), Ok(0.2));
        assert!(parse_prob("150%").unwrap_err().contains("from 0% to 100%"));
        assert!(parse_prob("lots").unwrap_err().contains("like 1% or 0.01"));
        assert_eq!(parse_time_us("5ms"), Ok(5000));
        assert_eq!(parse_time_us("2.5ms"), Ok(2500));
        assert_eq!(parse_time_us("500us"), Ok(500));
        assert_eq!(parse_time_us("0.05s"), Ok(50_000));
        assert_eq!(parse_time_us("0"), Ok(0));
        assert!(parse_time_us("5").unwrap_err().contains("like 5ms"));
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5mbit/s"), Ok(2_500_000));
        assert!(parse_rate("100mb").unwrap_err().contains("like 100mbit"));
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("64kB"), Ok(64_000));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_reorder("20%:3ms"), Ok((0.2, 3000)));
        assert!(parse_reorder("20%").unwrap_err().contains("20%:3ms"));
        let ge = parse_ge("1%,25%").unwrap();
        assert_eq!(
            (ge.p, ge.r, ge.loss_bad, ge.loss_good),
            (0.01, 0.25, 1.0, 0.0)
        );
        let ge = parse_ge("1%,25%,50%,0.1%").unwrap();
        assert_eq!((ge.loss_bad, ge.loss_good), (0.5, 0.001));
    }

    fn matches(args: &[&str]) -> ArgMatches {
        add_flags(Command::new("t").arg(Arg::new("seed").long("seed")))
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn a_direction_flag_overrides_the_common_one() {
        let m = matches(&["--loss", "1%", "--b2a-loss", "5%", "--a2b-delay", "5ms"]);
        let (a2b, b2a) = configs(&m, 7).unwrap();
        let want_a2b = ImpairConfig::new().loss(0.01).delay_us(5000).seed(7);
        let want_b2a = ImpairConfig::new().loss(0.05).seed(8);
        assert_eq!((a2b, b2a), (want_a2b, want_b2a));
        let m = matches(&["--a2b-seed", "3"]);
        let (a2b, b2a) = configs(&m, 7).unwrap();
        assert_eq!(
            (a2b, b2a),
            (ImpairConfig::new().seed(3), ImpairConfig::new().seed(8))
        );
    }

    #[test]
    fn errors_name_the_flag_and_the_direction() {
        let e = configs(&matches(&["--a2b-loss", "x"]), 1).unwrap_err();
        assert_eq!(e, "--a2b-loss: \"x\" is not a probability like 1% or 0.01");
        let e = configs(&matches(&["--queue", "64KiB"]), 1).unwrap_err();
        assert!(
            e.starts_with("A to B: invalid impairment: a bottleneck queue needs a rate"),
            "{e}"
        );
    }
}
