//! The business registry (企业信用信息公示系统) extract: every
//! organisation's unified social credit code, registered name, legal
//! representative and address as the registry holds them, the
//! authoritative reference the accuracy rules compare with. The registry
//! is sometimes ahead of the insurer: a new legal representative, a moved
//! address, a renamed company.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::GenerateError;
use super::book::{Customer, Kind, address_text, chance, person_name};
use super::out::CsvOut;

pub(super) struct Registry {
    out: CsvOut,
    seed: u64,
}

impl Registry {
    pub(super) fn create(dir: &std::path::Path, seed: u64) -> Result<Self, GenerateError> {
        Ok(Self {
            out: CsvOut::create(
                dir.join("business_registry.csv"),
                false,
                &[
                    "uscc",
                    "registered_name",
                    "legal_representative",
                    "address",
                    "status",
                ],
            )?,
            seed,
        })
    }

    /// The registry's entry of an organisation (none for a person). Its
    /// own random stream, so the other systems' extracts do not change.
    pub(super) fn write(&mut self, c: &Customer) -> Result<(), GenerateError> {
        if c.kind == Kind::Individual {
            return Ok(());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ c.n.wrapping_mul(0x9FB2_1C65_1E98_DF25),
        );
        let rng = &mut rng;
        let name = if chance(rng, 0.02) {
            format!("{}（集团）", c.name.trim_end_matches("有限公司")) + "有限公司"
        } else {
            c.name.clone()
        };
        let legal_rep = if chance(rng, 0.04) {
            let male = chance(rng, 0.5);
            person_name(rng, male).0
        } else {
            c.legal_rep.clone()
        };
        let address = if chance(rng, 0.03) {
            address_text(c, 0) + "2楼"
        } else {
            address_text(c, 0)
        };
        self.out
            .row([c.uscc.as_str(), &name, &legal_rep, &address, "存续"])?;
        Ok(())
    }

    pub(super) fn finish(self) -> Result<(std::path::PathBuf, u64), GenerateError> {
        self.out.finish()
    }
}
