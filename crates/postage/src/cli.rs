//! `netbill postage …`: command-line interface of the postage subsystem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ed25519_dalek::{Signer, SigningKey};
use indicatif::{ProgressBar, ProgressStyle};

use crate::barcode::{self, BarcodeError};
use crate::credit::FundingCredit;
use crate::device::{self, Device, DeviceReport, KeySpec, PrintRequest};
use crate::fsutil;
use crate::indicium::{DeliveryPoint, INDICIUM_LEN, Indicium, RateCategory, Zip};
use crate::operator::{Operator, TrustStore};
use crate::pkcs11::TokenConfig;
use crate::station::{SeenStore, Station};
use crate::{DeviceId, MailDate, Postage};

/// Exit code for a rejecting verdict or a failed audit.
pub const EXIT_REJECTED: u8 = 3;
const SMALL_FILE_MAX: u64 = 64 * 1024;
const DATA_FILE_MAX: u64 = 16 * 1024 * 1024;
const SHEET_MAX: u32 = 10_000;

/// Cryptographic postage: a postal security device prints signed PDF417 indicia; sorting
/// stations accept each one once, for their own delivery area, for six months.
#[derive(Args, Debug)]
pub struct PostageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PostageCommand,
}

/// The postage commands.
#[derive(Subcommand, Debug)]
pub enum PostageCommand {
    /// Operator side: signing key, device certificates, funding credits, revocation, audit.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Device side: create a postal security device, report its registers, trigger tamper.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Load postage into a device from a single-use, device-bound credit signed by the operator.
    ///
    /// Either apply a credit file (`--credit`), or let the operator issue one on the spot
    /// (`--operator DIR --amount USD:50.00`).
    Fund(FundArgs),
    /// Print postage: one indicium, or a sheet of many (`--count`), as PNG or SVG.
    ///
    /// Each indicium is committed to the device (registers decremented, indicium kept for
    /// re-issue) before the label is written.
    Print(PrintArgs),
    /// Re-issue the device's last indicium (e.g. the label was lost in a crash), marked as a re-issue.
    Reissue(ReissueArgs),
    /// Render already-printed indicia (a hex file written by `print --data-out`) as PNG or SVG.
    Render(RenderArgs),
    /// Sorting station: decode and verify indicia, and record each accepted one.
    ///
    /// INPUT is a PNG image of a label, a file of hex indicia (one per line), a raw 107-byte
    /// indicium, or with `--data` the hex itself. Prints one verdict per indicium. Exit code:
    /// 0 all accepted, 3 some rejected, 1 error, 2 usage error.
    Verify(VerifyArgs),
    /// Sorting station: drop seen-set partitions whose entries are all older than six months.
    Purge(PurgeArgs),
    /// Measure indicia printed/s and verified/s (decode + verify + duplicate check) next to raw
    /// Ed25519 verification/s, in a temporary directory.
    Bench(BenchArgs),
}

/// Operator commands.
#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Create the operator signing key (`DIR/operator.key`, mode 0600) and its public directory
    /// (`DIR/public`: operator key, device certificates, revocation list) for stations.
    Init {
        /// Operator directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue the next single-use funding credit for one device, to a file (or, with `--resend N`,
    /// sign credit N again after it was lost before the device accepted it).
    Credit {
        /// Operator directory.
        #[arg(long)]
        dir: PathBuf,
        /// Device to credit.
        #[arg(long)]
        device_id: DeviceId,
        /// Amount, like USD:50.00.
        #[arg(long, required_unless_present = "resend", conflicts_with = "resend")]
        amount: Option<Postage>,
        /// Re-send the already issued credit with this number (same amount).
        #[arg(long)]
        resend: Option<u32>,
        /// Where to write the credit.
        #[arg(long)]
        out: PathBuf,
        /// Issue date (default: today, UTC).
        #[arg(long)]
        date: Option<MailDate>,
    },
    /// Revoke a device certificate: stations reject its indicia from then on.
    Revoke {
        /// Operator directory.
        #[arg(long)]
        dir: PathBuf,
        /// Certificate serial to revoke.
        #[arg(long)]
        serial: u32,
    },
    /// Audit a device report: signature, register invariant, control total against credits issued.
    Audit {
        /// Operator directory.
        #[arg(long)]
        dir: PathBuf,
        /// Report file written by `device report --out`.
        #[arg(long)]
        report: PathBuf,
    },
}

/// Options selecting a device and unlocking its token key.
#[derive(Args, Debug, Clone)]
pub struct DeviceOpt {
    /// Device directory.
    #[arg(long)]
    pub device: PathBuf,
    /// PIN of the PKCS#11 token, if the device key lives in one.
    #[arg(long, env = "NETBILL_PKCS11_PIN", hide_env_values = true)]
    pub pkcs11_pin: Option<String>,
}

/// Device commands.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Create a device: its key is generated inside it (or inside a PKCS#11 token) and
    /// certified by the operator, who also assigns its id.
    Init {
        /// Device selection and token PIN.
        #[command(flatten)]
        dev: DeviceOpt,
        /// Operator directory that certifies the device.
        #[arg(long)]
        operator: PathBuf,
        /// PKCS#11 module to keep the signing key in (e.g. /usr/lib/softhsm/libsofthsm2.so).
        #[arg(long, requires = "pkcs11_token")]
        pkcs11_module: Option<PathBuf>,
        /// Label of the (already initialised) token to use.
        #[arg(long, requires = "pkcs11_module")]
        pkcs11_token: Option<String>,
        /// Certificate start date (default: today, UTC).
        #[arg(long)]
        date: Option<MailDate>,
    },
    /// Show the registers; with `--out`, write a device-signed report for the operator's audit.
    Report {
        /// Device selection and token PIN.
        #[command(flatten)]
        dev: DeviceOpt,
        /// Where to write the signed report.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Report date (default: today, UTC).
        #[arg(long)]
        date: Option<MailDate>,
    },
    /// Tamper trigger: erase the device keys now and disable it for good.
    Tamper {
        /// Device selection and token PIN.
        #[command(flatten)]
        dev: DeviceOpt,
        /// Reason recorded in the device.
        #[arg(long, default_value = "explicit tamper trigger")]
        reason: String,
    },
}

/// Arguments of `fund`.
#[derive(Args, Debug)]
pub struct FundArgs {
    /// Device selection and token PIN.
    #[command(flatten)]
    dev: DeviceOpt,
    /// Credit file issued by `operator credit`.
    #[arg(long, conflicts_with_all = ["operator", "amount"], required_unless_present = "operator")]
    credit: Option<PathBuf>,
    /// Operator directory: issue a credit now and apply it.
    #[arg(long, requires = "amount")]
    operator: Option<PathBuf>,
    /// Amount for a new credit, like USD:50.00.
    #[arg(long)]
    amount: Option<Postage>,
    /// Also keep the newly issued credit in this file.
    #[arg(long, requires = "operator")]
    save_credit: Option<PathBuf>,
    /// Issue date of a new credit (default: today, UTC).
    #[arg(long)]
    date: Option<MailDate>,
}

/// Arguments of `print`.
#[derive(Args, Debug)]
pub struct PrintArgs {
    /// Device selection and token PIN.
    #[command(flatten)]
    dev: DeviceOpt,
    /// Originating ZIP code (5 digits).
    #[arg(long)]
    from: Zip,
    /// Destination ZIP code (5 digits).
    #[arg(long)]
    to: Zip,
    /// ZIP+4 and 2-digit delivery point within the destination ZIP, like 3890-01.
    #[arg(long)]
    delivery_point: String,
    /// Postage per piece, like USD:0.58.
    #[arg(long)]
    postage: Postage,
    /// Date of mailing (default: today, UTC).
    #[arg(long)]
    date: Option<MailDate>,
    /// Rate category: letter, postcard, flat, parcel, priority.
    #[arg(long, default_value = "letter")]
    rate: RateCategory,
    /// Output label: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// Number of indicia: more than one prints a sheet.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(SHEET_MAX)))]
    count: u32,
    /// Labels per row on a sheet.
    #[arg(long, default_value_t = 4)]
    per_row: usize,
    /// Also append each indicium as a hex line to this file, fsynced as it is printed
    /// (for a sheet the default is OUT with `.hex` appended).
    #[arg(long)]
    data_out: Option<PathBuf>,
}

/// Arguments of `reissue`.
#[derive(Args, Debug)]
pub struct ReissueArgs {
    /// Device selection and token PIN.
    #[command(flatten)]
    dev: DeviceOpt,
    /// Output label: .png or .svg.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Hex file of indicia, one per line.
    #[arg(long)]
    data: PathBuf,
    /// Output: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// Labels per row.
    #[arg(long, default_value_t = 4)]
    per_row: usize,
}

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// PNG image, hex file, raw indicium file, or (with --data) hex.
    input: String,
    /// INPUT is the hex of one indicium rather than a file name.
    #[arg(long)]
    data: bool,
    /// Delivery area this station sorts for: a 5-digit ZIP or a 3-digit ZIP prefix.
    #[arg(long)]
    station: String,
    /// The operator's public directory (operator key, certificates, revocation list).
    #[arg(long)]
    trust: PathBuf,
    /// Station seen-set database (SQLite; created if missing).
    #[arg(long)]
    store: PathBuf,
    /// Station date (default: today, UTC).
    #[arg(long)]
    today: Option<MailDate>,
}

/// Arguments of `purge`.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Station seen-set database.
    #[arg(long)]
    store: PathBuf,
    /// Station date (default: today, UTC).
    #[arg(long)]
    today: Option<MailDate>,
}

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Indicia to print and verify.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Fill the station's seen-set with this many other entries first (duplicate checks then
    /// run against a large store).
    #[arg(long, default_value_t = 0)]
    preload: u32,
}

/// Runs a postage command. `Ok(non-zero)` for a rejecting verdict; `Err` for errors.
pub fn run(args: PostageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PostageCommand::Operator(cmd) => run_operator(cmd),
        PostageCommand::Device(cmd) => run_device(cmd),
        PostageCommand::Fund(a) => run_fund(a),
        PostageCommand::Print(a) => run_print(a),
        PostageCommand::Reissue(a) => run_reissue(a),
        PostageCommand::Render(a) => run_render(a),
        PostageCommand::Verify(a) => run_verify(a),
        PostageCommand::Purge(a) => run_purge(a),
        PostageCommand::Bench(a) => run_bench(a),
    }
}

fn today_or(d: Option<MailDate>) -> MailDate {
    d.unwrap_or_else(MailDate::today_utc)
}

fn open_device(dev: &DeviceOpt) -> anyhow::Result<Device> {
    Device::open(&dev.device, dev.pkcs11_pin.as_deref())
        .with_context(|| format!("device {}", dev.device.display()))
}

fn run_operator(cmd: OperatorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OperatorCommand::Init { dir } => {
            let op = Operator::init(&dir)?;
            println!("operator created in {}", dir.display());
            println!("public key {}", hex::encode(op.public_key()));
            println!("give stations the directory {}", op.public_dir().display());
        }
        OperatorCommand::Credit {
            dir,
            device_id,
            amount,
            resend,
            out,
            date,
        } => {
            let op = Operator::open(&dir)?;
            let credit = match (resend, amount) {
                (Some(number), _) => op.resend_credit(device_id, number, today_or(date))?,
                (None, Some(amount)) => op.issue_credit(device_id, amount, today_or(date))?,
                (None, None) => bail!("give --amount USD:… for a new credit or --resend N"),
            };
            let amount = credit.amount;
            fsutil::write_file(&out, &credit.to_bytes(), true)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "credit #{} of {} for device {} written to {}",
                credit.number,
                amount,
                device_id,
                out.display()
            );
        }
        OperatorCommand::Revoke { dir, serial } => {
            Operator::open(&dir)?.revoke(serial)?;
            println!("certificate {serial} revoked");
        }
        OperatorCommand::Audit { dir, report } => {
            let op = Operator::open(&dir)?;
            let bytes = fsutil::read_limited(&report, SMALL_FILE_MAX)
                .with_context(|| format!("cannot read {}", report.display()))?;
            let audit = op.audit(&bytes)?;
            print_registers(&audit.report.registers);
            println!("credits issued and accepted: {}", audit.credited);
            if audit.findings.is_empty() {
                println!(
                    "AUDIT OK: device {} report of {} is consistent",
                    audit.report.device_id, audit.report.date
                );
            } else {
                for f in &audit.findings {
                    println!("AUDIT FAILED: {f}");
                }
                return Ok(ExitCode::from(EXIT_REJECTED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_registers(r: &device::Registers) {
    println!("ascending register:  {}", r.ascending);
    println!("descending register: {}", r.descending);
    println!("total funded:        {}", r.total_funded);
    println!("pieces printed:      {}", r.sequence);
    println!("credits accepted:    {}", r.credits_accepted);
    println!("re-issues:           {}", r.reissues);
}

fn run_device(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCommand::Init {
            dev,
            operator,
            pkcs11_module,
            pkcs11_token,
            date,
        } => {
            let op = Operator::open(&operator)?;
            let today = today_or(date);
            let id = op.allocate_device_id()?;
            let key = match (pkcs11_module, pkcs11_token) {
                (Some(module), Some(token_label)) => {
                    let Some(pin) = dev.pkcs11_pin.clone() else {
                        bail!(
                            "a PKCS#11 token needs its user PIN: pass --pkcs11-pin or set NETBILL_PKCS11_PIN"
                        );
                    };
                    KeySpec::Token {
                        config: TokenConfig {
                            module,
                            token_label,
                            key_label: format!("netbill-psd-{}", id.0),
                        },
                        pin,
                    }
                }
                _ => KeySpec::SealedFile,
            };
            let d = Device::create(&dev.device, id, op.public_key(), key, |pk| {
                op.certify(id, pk, today)
            })?;
            let c = d.certificate();
            println!("device {} created in {}", d.id(), dev.device.display());
            println!(
                "certificate serial {} valid {} to {}",
                c.serial, c.valid_from, c.valid_until
            );
            println!(
                "signing key: {}",
                if d.uses_token() {
                    "PKCS#11 token"
                } else {
                    "sealed device state"
                }
            );
        }
        DeviceCommand::Report { dev, out, date } => {
            if let Some(info) = device::tamper_info(&dev.device) {
                println!("device TAMPERED: {}", info.reason);
                if let Some(id) = info.device_id {
                    println!("device id: {id}");
                }
                match info.registers {
                    Some(r) => {
                        println!("last registers (no longer integrity-protected, not signed):");
                        print_registers(&r);
                    }
                    None => println!("registers unreadable"),
                }
                return Ok(ExitCode::from(EXIT_REJECTED));
            }
            let d = open_device(&dev)?;
            println!(
                "device {}, certificate serial {}",
                d.id(),
                d.certificate().serial
            );
            print_registers(&d.registers());
            if let Some(out) = out {
                let report = d.report(today_or(date))?;
                fsutil::write_file(&out, &report.to_bytes(), false)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                println!("signed report written to {}", out.display());
            }
        }
        DeviceCommand::Tamper { dev, reason } => {
            let e = device::tamper_dir(&dev.device, &reason, dev.pkcs11_pin.as_deref());
            match e {
                device::DeviceError::Tampered { reason } => {
                    println!(
                        "device {} disabled: keys erased ({reason})",
                        dev.device.display()
                    );
                }
                other => return Err(other.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_fund(a: FundArgs) -> anyhow::Result<ExitCode> {
    let mut d = open_device(&a.dev)?;
    let bytes = match (&a.credit, &a.operator, a.amount) {
        (Some(path), _, _) => fsutil::read_limited(path, SMALL_FILE_MAX)
            .with_context(|| format!("cannot read credit {}", path.display()))?,
        (None, Some(op_dir), Some(amount)) => {
            let op = Operator::open(op_dir)?;
            let credit = op.issue_credit(d.id(), amount, today_or(a.date))?;
            if let Some(save) = &a.save_credit {
                fsutil::write_file(save, &credit.to_bytes(), true)
                    .with_context(|| format!("cannot write {}", save.display()))?;
            }
            credit.to_bytes()
        }
        _ => bail!("give either --credit FILE or --operator DIR --amount USD:…"),
    };
    let parsed = FundingCredit::from_bytes(&bytes).ok();
    let amount = parsed.as_ref().map(|c| c.amount).unwrap_or_default();
    let regs = d
        .fund(&bytes)
        .with_context(|| match (&a.operator, &parsed) {
            (Some(_), Some(c)) => format!(
                "funding refused; no register changed (credit #{} was issued: re-send it with \
             `netbill postage operator credit --device-id {} --resend {}`)",
                c.number, c.device_id, c.number
            ),
            _ => "funding refused; no register changed".to_string(),
        })?;
    println!("device {} funded with {}", d.id(), amount);
    print_registers(&regs);
    Ok(ExitCode::SUCCESS)
}

fn caption(ind: &Indicium) -> Vec<String> {
    vec![
        format!(
            "{} {} {}",
            ind.postage,
            ind.rate.name().to_uppercase(),
            ind.date
        ),
        format!("FROM {} TO {}", ind.origin, ind.destination),
        format!(
            "PSD {} #{}{}",
            ind.device_id,
            ind.sequence,
            if ind.is_reissue() { " RE-ISSUE" } else { "" }
        ),
    ]
}

fn write_labels(out: &Path, indicia: &[Indicium], per_row: usize) -> anyhow::Result<()> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = match ext.as_str() {
        "png" => {
            let datas: Vec<Vec<u8>> = indicia.iter().map(|i| i.to_bytes().to_vec()).collect();
            if datas.len() == 1 {
                barcode::render_png(&datas[0])?
            } else {
                barcode::render_sheet_png(&datas, per_row)?
            }
        }
        "svg" => {
            let items: Vec<(Vec<u8>, Vec<String>)> = indicia
                .iter()
                .map(|i| (i.to_bytes().to_vec(), caption(i)))
                .collect();
            barcode::render_svg(&items, per_row)?.into_bytes()
        }
        _ => bail!("output {} must end in .png or .svg", out.display()),
    };
    fsutil::write_file(out, &bytes, false)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn check_label_path(out: &Path) -> anyhow::Result<()> {
    match out
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
    {
        Some(e) if e == "png" || e == "svg" => Ok(()),
        _ => bail!("output {} must end in .png or .svg", out.display()),
    }
}

fn append_hex(path: &Path, ind: &Indicium) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{}", hex::encode(ind.to_bytes()))?;
    f.sync_all()
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn run_print(a: PrintArgs) -> anyhow::Result<ExitCode> {
    check_label_path(&a.out)?;
    let destination = DeliveryPoint::new(a.to, &a.delivery_point).map_err(anyhow::Error::msg)?;
    let mut d = open_device(&a.dev)?;
    let req = PrintRequest {
        postage: a.postage,
        date: today_or(a.date),
        origin: a.from,
        destination,
        rate: a.rate,
    };
    let data_out = match (&a.data_out, a.count > 1) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => {
            let mut s = a.out.clone().into_os_string();
            s.push(".hex");
            Some(PathBuf::from(s))
        }
        (None, false) => None,
    };
    let needed = a.postage.0.saturating_mul(u64::from(a.count));
    if needed > d.registers().descending.0 {
        return Err(device::DeviceError::InsufficientFunds {
            needed: Postage(needed),
            available: d.registers().descending,
        })
        .context("printing refused; no register changed");
    }
    let pb = progress(u64::from(a.count), "printing");
    if a.count == 1 {
        pb.finish_and_clear();
    }
    let mut printed = Vec::with_capacity(a.count as usize);
    for _ in 0..a.count {
        let ind = d
            .print(&req)
            .context("printing refused; no register changed")?;
        if let Some(p) = &data_out {
            append_hex(p, &ind).with_context(|| {
                format!(
                    "indicium #{} was printed but {} could not be written; run `netbill postage reissue` to get it again",
                    ind.sequence,
                    p.display()
                )
            })?;
        }
        printed.push(ind);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let last = printed.last().map(|i| i.sequence).unwrap_or(0);
    write_labels(&a.out, &printed, a.per_row).with_context(|| {
        format!(
            "indicia up to #{last} were printed (registers decremented) but the label could not be written; \
             run `netbill postage reissue` (or `render` from the .hex file) to get it again"
        )
    })?;
    let first = printed.first().map(|i| i.sequence).unwrap_or(0);
    if a.count == 1 {
        println!(
            "printed indicium #{first} ({}) to {}",
            a.postage,
            a.out.display()
        );
    } else {
        println!(
            "printed {} indicia #{first}..#{last} ({} each) to {}",
            a.count,
            a.postage,
            a.out.display()
        );
    }
    if let Some(p) = data_out {
        println!("indicium data appended to {}", p.display());
    }
    println!("descending register now {}", d.registers().descending);
    Ok(ExitCode::SUCCESS)
}

fn run_reissue(a: ReissueArgs) -> anyhow::Result<ExitCode> {
    check_label_path(&a.out)?;
    let mut d = open_device(&a.dev)?;
    let ind = d.reissue_last()?;
    write_labels(&a.out, std::slice::from_ref(&ind), 1)?;
    println!(
        "re-issued indicium #{} (marked RE-ISSUE) to {}",
        ind.sequence,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_hex_lines(text: &str) -> Vec<Result<Vec<u8>, BarcodeError>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| hex::decode(l).map_err(|_| BarcodeError::Image("not a hex indicium line".into())))
        .collect()
}

/// Reads verification input: PNG image, hex lines, or a raw indicium.
fn read_input(input: &str, is_data: bool) -> anyhow::Result<Vec<Result<Vec<u8>, BarcodeError>>> {
    if is_data {
        return Ok(vec![
            hex::decode(input.trim()).map_err(|_| BarcodeError::Image("--data is not hex".into())),
        ]);
    }
    let path = Path::new(input);
    let bytes = fsutil::read_limited(path, DATA_FILE_MAX)
        .with_context(|| format!("cannot read {input}"))?;
    if bytes.starts_with(b"\x89PNG") {
        return Ok(vec![barcode::decode_image(&bytes)]);
    }
    if bytes.len() == INDICIUM_LEN {
        return Ok(vec![Ok(bytes)]);
    }
    match std::str::from_utf8(&bytes) {
        Ok(t) if t.trim_start().starts_with('<') => Ok(vec![Err(BarcodeError::Image(
            "SVG is a print format; scan or rasterise the label to PNG first".into(),
        ))]),
        Ok(t)
            if !t.trim().is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace()) =>
        {
            Ok(parse_hex_lines(t))
        }
        _ => Ok(vec![barcode::decode_image(&bytes)]),
    }
}

fn run_verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let trust = TrustStore::load(&a.trust)?;
    let mut station = Station::open(&a.store, trust, &a.station)?;
    let items = read_input(&a.input, a.data)?;
    let verdicts = station.check_batch(&items, today_or(a.today))?;
    let mut rejected = 0;
    for v in &verdicts {
        match v {
            Ok(i) => println!(
                "ACCEPT device {} seq {} {} mailed {} to {}{}",
                i.device_id,
                i.sequence,
                i.postage,
                i.date,
                i.destination,
                if i.is_reissue() { " (re-issue)" } else { "" }
            ),
            Err(r) => {
                rejected += 1;
                println!("REJECT {}: {}", r.code(), r);
            }
        }
    }
    if verdicts.len() > 1 {
        println!(
            "{} accepted, {} rejected",
            verdicts.len() - rejected,
            rejected
        );
    }
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REJECTED)
    })
}

fn run_render(a: RenderArgs) -> anyhow::Result<ExitCode> {
    check_label_path(&a.out)?;
    let text = fsutil::read_limited(&a.data, DATA_FILE_MAX)
        .with_context(|| format!("cannot read {}", a.data.display()))?;
    let text = String::from_utf8(text).context("the data file is not text")?;
    let mut indicia = Vec::new();
    for (n, item) in parse_hex_lines(&text).into_iter().enumerate() {
        let bytes = item.map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        indicia.push(
            Indicium::from_bytes(&bytes)
                .with_context(|| format!("line {}: not an indicium", n + 1))?,
        );
    }
    if indicia.is_empty() {
        bail!("{} holds no indicia", a.data.display());
    }
    write_labels(&a.out, &indicia, a.per_row)?;
    println!("rendered {} indicia to {}", indicia.len(), a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn run_purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    if !a.store.exists() {
        bail!("station store {} does not exist", a.store.display());
    }
    let mut station = SeenStore::open(&a.store)?;
    let dropped = station.purge(today_or(a.today))?;
    if dropped.is_empty() {
        println!("nothing to purge");
    }
    for m in dropped {
        println!(
            "dropped partition {m} (mailed in {}-{:02}, all older than six months)",
            m / 100,
            m % 100
        );
    }
    for (m, n) in station.counts()? {
        println!("kept partition {m}: {n} entries");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let n = a.count;
    let tmp = std::env::temp_dir().join(format!("netbill-postage-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).context("cannot create a temporary directory")?;
    let result = bench_in(&tmp, n, a.preload);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn bench_in(tmp: &Path, n: u32, preload: u32) -> anyhow::Result<ExitCode> {
    let today = MailDate::today_utc();
    let op = Operator::init(&tmp.join("operator"))?;
    let id = op.allocate_device_id()?;
    let mut d = Device::create(
        &tmp.join("device"),
        id,
        op.public_key(),
        KeySpec::SealedFile,
        |pk| op.certify(id, pk, today),
    )?;
    let credit = op.issue_credit(id, Postage(u64::from(n) * 1000), today)?;
    d.fund(&credit.to_bytes())?;
    let req = PrintRequest {
        postage: Postage(580),
        date: today,
        origin: Zip(15213),
        destination: DeliveryPoint(10_001_389_001),
        rate: RateCategory::Letter,
    };

    let pb = progress(u64::from(n), "printing");
    let t = Instant::now();
    let (mut device_secs, mut render_secs) = (0.0, 0.0);
    let mut images = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t_dev = Instant::now();
        let ind = d.print(&req)?;
        device_secs += t_dev.elapsed().as_secs_f64();
        let t_render = Instant::now();
        images.push(barcode::render_png(&ind.to_bytes())?);
        render_secs += t_render.elapsed().as_secs_f64();
        pb.inc(1);
    }
    let print_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let trust = TrustStore::load(&op.public_dir())?;
    let mut station = Station::open(&tmp.join("station.db"), trust, "10001")?;
    if preload > 0 {
        let pb = ProgressBar::new_spinner();
        pb.set_message(format!("preloading {preload} seen-set entries"));
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        let t = Instant::now();
        let first = DeviceId(1_000_000);
        let per_device = station.store().preload(today, first, preload)?;
        pb.finish_and_clear();
        let total = u64::from(per_device) * u64::from(crate::station::PRELOAD_DEVICES);
        println!(
            "preloaded {total} seen-set entries in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let lookups = 20_000u32;
        let t = Instant::now();
        let mut hits = 0u32;
        for i in 0..lookups {
            let device = DeviceId(
                first.0 + rand::random_range(0..u64::from(crate::station::PRELOAD_DEVICES)),
            );
            // Half the probes hit an existing entry, half miss (sequence beyond the preloaded ones).
            let seq = rand::random_range(1..=per_device) + if i % 2 == 0 { 0 } else { per_device };
            if station.store().lookup(device, seq)?.is_some() {
                hits += 1;
            }
        }
        println!(
            "random duplicate lookups in that store: {:>9.0}/s ({hits} hits of {lookups})",
            f64::from(lookups) / t.elapsed().as_secs_f64().max(1e-9)
        );
    }
    let pb = progress(u64::from(n), "verifying");
    let t = Instant::now();
    let (mut decode_secs, mut check_secs) = (0.0, 0.0);
    let mut accepted = 0u32;
    for png in &images {
        let t_decode = Instant::now();
        let item = barcode::decode_image(png);
        decode_secs += t_decode.elapsed().as_secs_f64();
        let t_check = Instant::now();
        let verdict = station.check_batch(std::slice::from_ref(&item), today)?;
        check_secs += t_check.elapsed().as_secs_f64();
        if matches!(verdict.first(), Some(Ok(_))) {
            accepted += 1;
        }
        pb.inc(1);
    }
    let verify_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if accepted != n {
        bail!("bench: only {accepted} of {n} indicia were accepted");
    }

    let key = SigningKey::from_bytes(&[7; 32]);
    let msg = [0x42u8; 43];
    let sig = key.sign(&msg);
    let vk = key.verifying_key();
    let rounds = (n * 20).max(2000);
    let t = Instant::now();
    let mut ok = 0u32;
    for _ in 0..rounds {
        if vk.verify_strict(std::hint::black_box(&msg), &sig).is_ok() {
            ok += 1;
        }
    }
    let raw_secs = t.elapsed().as_secs_f64();
    let report: DeviceReport = d.report(today)?;
    let rate = |count: u32, secs: f64| f64::from(count) / secs.max(1e-9);
    println!(
        "indicia: {n}, {INDICIUM_LEN} bytes each, PNG label ~{} bytes",
        images.first().map(Vec::len).unwrap_or(0)
    );
    println!(
        "printed:  {:>9.0} indicia/s (sign + durable register commit + PNG render)",
        rate(n, print_secs)
    );
    println!(
        "  device print alone (sign + fsynced commit): {:>9.0}/s",
        rate(n, device_secs)
    );
    println!(
        "  PNG render alone:                          {:>9.0}/s",
        rate(n, render_secs)
    );
    println!(
        "verified: {:>9.0} indicia/s at the station (PNG decode + signature/certificate + duplicate check + durable record)",
        rate(n, verify_secs)
    );
    println!(
        "  PNG decode alone:                          {:>9.0}/s",
        rate(n, decode_secs)
    );
    println!(
        "  verify + duplicate check + commit alone:   {:>9.0}/s",
        rate(n, check_secs)
    );
    println!(
        "raw Ed25519 verify: {:>9.0} signatures/s ({ok} of {rounds} in this run)",
        rate(rounds, raw_secs)
    );
    println!(
        "device registers after the run: ascending {} descending {}",
        report.registers.ascending, report.registers.descending
    );
    Ok(ExitCode::SUCCESS)
}
