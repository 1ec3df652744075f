//! The `instructions` rule: an x64 driver's code may use the general registers and SSE freely
//! (the kernel saves the volatile XMM registers on interrupts), but not the x87/MMX register
//! stack nor the AVX state (the upper halves of YMM/ZMM, the mask registers): those it must
//! save itself with KeSaveExtendedProcessorState, which a StorPort miniport, limited to
//! storport.sys imports, cannot even call. Found by disassembling the code with iced-x86.

use iced_x86::{CpuidFeature, Decoder, DecoderOptions, EncodingKind, Instruction};

/// An instruction that uses extended state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its RVA.
    pub rva: u32,
    /// What it is: iced-x86's name for the instruction and its operands.
    pub instruction: String,
    /// The state it uses.
    pub state: &'static str,
}

/// The extended state `instruction` uses, if any.
fn state_of(instruction: &Instruction) -> Option<&'static str> {
    match instruction.encoding() {
        EncodingKind::VEX | EncodingKind::XOP => return Some("AVX (VEX/XOP)"),
        EncodingKind::EVEX | EncodingKind::MVEX => return Some("AVX-512 (EVEX/MVEX)"),
        EncodingKind::D3NOW => return Some("3DNow! (x87/MMX)"),
        _ => {}
    }
    instruction
        .cpuid_features()
        .iter()
        .find_map(|feature| match feature {
            CpuidFeature::FPU
            | CpuidFeature::FPU287
            | CpuidFeature::FPU287XL_ONLY
            | CpuidFeature::FPU387
            | CpuidFeature::FPU387SL_ONLY => Some("x87"),
            CpuidFeature::MMX => Some("MMX (x87)"),
            _ => None,
        })
}

/// Every instruction of `code` (loaded at `rva`) that uses extended state, decoded linearly
/// (x64 code from lld keeps its jump tables in `.rdata`, so `.text` is instructions and
/// `int3` padding; undecodable bytes are skipped one at a time).
#[must_use]
pub fn extended_state(code: &[u8], rva: u32) -> Vec<Found> {
    let mut decoder = Decoder::with_ip(64, code, u64::from(rva), DecoderOptions::NONE);
    let mut found = Vec::new();
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            continue;
        }
        if let Some(state) = state_of(&instruction) {
            found.push(Found {
                rva: instruction.ip32(),
                instruction: format!("{:?}", instruction.code()),
                state,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_and_sse_code_passes() {
        // mov rax, rcx; movdqu xmm0, [rcx]; pxor xmm1, xmm1; addps xmm0, xmm1; ret
        let code = [
            0x48, 0x89, 0xC8, 0xF3, 0x0F, 0x6F, 0x01, 0x66, 0x0F, 0xEF, 0xC9, 0x0F, 0x58, 0xC1,
            0xC3,
        ];
        assert_eq!(extended_state(&code, 0x1000), []);
    }

    #[test]
    fn avx_avx512_x87_and_mmx_are_found_with_their_rva() {
        // vmovdqu ymm0, [rcx] (VEX)
        let vex = [0xC5, 0xFE, 0x6F, 0x01];
        // vmovdqu64 zmm0, [rcx] (EVEX)
        let evex = [0x62, 0xF1, 0xFE, 0x48, 0x6F, 0x01];
        // fld qword ptr [rcx] (x87)
        let x87 = [0xDD, 0x01];
        // paddb mm0, mm1 (MMX)
        let mmx = [0x0F, 0xFC, 0xC1];
        for (code, state) in [
            (&vex[..], "AVX (VEX/XOP)"),
            (&evex[..], "AVX-512 (EVEX/MVEX)"),
            (&x87[..], "x87"),
            (&mmx[..], "MMX (x87)"),
        ] {
            let mut text = vec![0x90, 0x90];
            text.extend_from_slice(code);
            text.push(0xC3);
            let found = extended_state(&text, 0x1000);
            assert_eq!(found.len(), 1, "{code:x?}: {found:?}");
            assert_eq!(found[0].rva, 0x1002);
            assert_eq!(found[0].state, state);
        }
    }
}
