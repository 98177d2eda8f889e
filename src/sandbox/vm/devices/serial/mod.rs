//! A 16550A-compatible UART (COM1, ports 0x3f8–0x3ff): transmit only. Bytes the guest sends go
//! to the configured writer; the registers behave enough like a real 8250 for Linux's probe
//! (scratch register, loopback MSR) and its THR-empty interrupt.

use std::io::Write;

use crate::sandbox::vm::kvm::EventFd;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;

const THR: u16 = 0;
const IER: u16 = 1;
const IIR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;

const LCR_DLAB: u8 = 0x80;
const IER_THRI: u8 = 0x02;
const IIR_NONE: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_FIFO: u8 = 0xc0;
const LSR_THRE_TEMT: u8 = 0x60;
const MCR_LOOP: u8 = 0x10;

pub struct Serial {
    out: Box<dyn Write + Send>,
    irq: Option<EventFd>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo: bool,
    thr_interrupt_pending: bool,
}

impl Serial {
    pub fn new(out: Box<dyn Write + Send>, irq: Option<EventFd>) -> Serial {
        Serial {
            out,
            irq,
            ier: 0,
            lcr: 0x03,
            mcr: 0x08,
            scr: 0,
            dll: 0x0c,
            dlm: 0,
            fifo: false,
            thr_interrupt_pending: false,
        }
    }

    /// The transmitter is always immediately empty again, so enabling (or feeding) it with
    /// THRI set raises the interrupt.
    fn raise_thr_interrupt(&mut self) {
        if self.ier & IER_THRI != 0 {
            self.thr_interrupt_pending = true;
            if let Some(irq) = &self.irq {
                let _ = irq.write(1);
            }
        }
    }

    /// A write to port `COM1_BASE + offset`.
    pub fn write(&mut self, offset: u16, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            THR if dlab => self.dll = value,
            THR => {
                if self.mcr & MCR_LOOP == 0 {
                    // Serial output is best effort: a closed log must not stop the guest.
                    let _ = self.out.write_all(&[value]);
                    if value == b'\n' {
                        let _ = self.out.flush();
                    }
                }
                self.raise_thr_interrupt();
            }
            IER if dlab => self.dlm = value,
            IER => {
                self.ier = value & 0x0f;
                self.raise_thr_interrupt();
            }
            IIR => self.fifo = value & 1 != 0,
            LCR => self.lcr = value,
            MCR => self.mcr = value & 0x1f,
            SCR => self.scr = value,
            _ => {}
        }
    }

    /// A read from port `COM1_BASE + offset`.
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        let fifo = if self.fifo { IIR_FIFO } else { 0 };
        match offset {
            THR if dlab => self.dll,
            THR => 0,
            IER if dlab => self.dlm,
            IER => self.ier,
            IIR => {
                if self.thr_interrupt_pending {
                    self.thr_interrupt_pending = false;
                    IIR_THRI | fifo
                } else {
                    IIR_NONE | fifo
                }
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => LSR_THRE_TEMT,
            MSR if self.mcr & MCR_LOOP != 0 => {
                // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                let m = self.mcr;
                ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            }
            MSR => 0xb0, // DCD | DSR | CTS
            SCR => self.scr,
            _ => 0xff,
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_and_passes_the_linux_probe() {
        let sink = Sink::default();
        let mut s = Serial::new(Box::new(sink.clone()), None);
        s.write(SCR, 0xa5);
        assert_eq!(s.read(SCR), 0xa5);
        s.write(MCR, MCR_LOOP | 0x0a);
        assert_eq!(s.read(MSR) & 0xf0, 0x90);
        s.write(MCR, 0x08);
        s.write(LCR, 0x83);
        s.write(THR, 1); // divisor latch, not output
        s.write(LCR, 0x03);
        for b in b"hi\n" {
            assert_eq!(s.read(LSR) & 0x20, 0x20);
            s.write(THR, *b);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        s.write(IER, IER_THRI);
        assert_eq!(s.read(IIR) & 0x0f, IIR_THRI);
        assert_eq!(s.read(IIR) & 0x0f, IIR_NONE);
    }
}
