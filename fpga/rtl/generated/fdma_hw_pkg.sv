// fdma hardware contract, rendered from the Rust description in hw/.
// GENERATED FILE - do not edit. Change hw/src and run:
//   cargo run -p fdma-hw --bin fdma-hw-gen
// hw/tests/drift.rs fails while this file differs from what hw/ renders.

package fdma_hw_pkg;

  // A contract package: every module uses only part of it.
  /* verilator lint_off UNUSEDPARAM */

  // ---- identity
  localparam logic [31:0] ID_VALUE = 32'hFD3A_0100;
  localparam logic [15:0] PCI_VENDOR_ID = 16'h1234;
  localparam logic [15:0] PCI_DEVICE_ID = 16'hFD3A;
  localparam logic [31:0] MSIX_TABLE_OFFSET = 32'h0001_0000;
  localparam logic [31:0] MSIX_PBA_OFFSET = 32'h0001_0800;

  // ---- default engine parameters (reported through CAP0..CAP2)
  localparam int DEF_CHANNELS           = 4;
  localparam int DEF_RING_LOG2_MAX      = 16;
  localparam int DEF_DMA_ADDR_BITS      = 64;
  localparam int DEF_DATA_BYTES_LOG2    = 5;
  localparam int DEF_FAULT_INJ          = 1;
  localparam int DEF_CLOCK_MHZ          = 250;
  localparam int DEF_CARD_MEM_LOG2      = 28;
  localparam int DEF_MAX_PAYLOAD_LOG2   = 8;
  localparam int DEF_MAX_READ_LOG2      = 9;
  localparam int DEF_MAX_DESC_LEN_LOG2  = 28;
  localparam int DEF_MAX_READS          = 16;
  localparam int MAX_CHANNELS           = 16;
  localparam int RING_LOG2_LIMIT        = 20;

  // ---- global registers (absolute BAR0 offsets)
  localparam logic [31:0] REG_ID                   = 32'h0000_0000; // RO Identification: magic and contract version. Checked by the driver before it binds.
  localparam logic [31:0] REG_CAP0                 = 32'h0000_0004; // RO Capabilities: channels, rings, addressing, datapath.
  localparam logic [31:0] REG_CAP1                 = 32'h0000_0008; // RO Capabilities: clock, card memory, transfer sizes.
  localparam logic [31:0] REG_CAP2                 = 32'h0000_000C; // RO Capabilities: descriptor length, vectors, read concurrency.
  localparam logic [31:0] REG_GCTRL                = 32'h0000_0010; // RW Global control.
  localparam logic [31:0] REG_GSTATUS              = 32'h0000_0014; // RO Global status.
  localparam logic [31:0] REG_ERR_VEC              = 32'h0000_0018; // RW Error interrupt vector; resets to the number of channels (the vector after the per-channel ones).
  localparam logic [31:0] REG_SCRATCH              = 32'h0000_001C; // RW Scratch register with no effect, for register-path sanity checks.
  localparam logic [31:0] REG_CYCLE_LO             = 32'h0000_0020; // RO Free-running device cycle counter, low half (contract D1). Reading it latches CYCLE_HI.
  localparam logic [31:0] REG_CYCLE_HI             = 32'h0000_0024; // RO Device cycle counter, high half as latched by the last CYCLE_LO read.
  localparam logic [31:0] REG_RD_OUTSTANDING       = 32'h0000_0028; // RO Host read requests outstanding.
  localparam logic [31:0] REG_RD_OUTSTANDING_MAX   = 32'h0000_002C; // RW Most host read requests seen outstanding at once since reset or since software last wrote it (write 0 to restart the measurement).

  localparam int ID_MINOR_LSB                         =  0;
  localparam int ID_MINOR_W                           =  8;
  localparam int ID_MAJOR_LSB                         =  8;
  localparam int ID_MAJOR_W                           =  8;
  localparam int ID_MAGIC_LSB                         = 16;
  localparam int ID_MAGIC_W                           = 16;
  localparam int CAP0_CHANNELS_LSB                    =  0;
  localparam int CAP0_CHANNELS_W                      =  8;
  localparam int CAP0_RING_LOG2_MAX_LSB               =  8;
  localparam int CAP0_RING_LOG2_MAX_W                 =  8;
  localparam int CAP0_DMA_ADDR_BITS_LSB               = 16;
  localparam int CAP0_DMA_ADDR_BITS_W                 =  8;
  localparam int CAP0_DATA_BYTES_LOG2_LSB             = 24;
  localparam int CAP0_DATA_BYTES_LOG2_W               =  4;
  localparam int CAP0_FAULT_INJ_LSB                   = 28;
  localparam int CAP0_FAULT_INJ_W                     =  1;
  localparam int CAP1_CLOCK_MHZ_LSB                   =  0;
  localparam int CAP1_CLOCK_MHZ_W                     = 16;
  localparam int CAP1_CARD_MEM_LOG2_LSB               = 16;
  localparam int CAP1_CARD_MEM_LOG2_W                 =  8;
  localparam int CAP1_MAX_PAYLOAD_LOG2_LSB            = 24;
  localparam int CAP1_MAX_PAYLOAD_LOG2_W              =  4;
  localparam int CAP1_MAX_READ_LOG2_LSB               = 28;
  localparam int CAP1_MAX_READ_LOG2_W                 =  4;
  localparam int CAP2_MAX_DESC_LEN_LOG2_LSB           =  0;
  localparam int CAP2_MAX_DESC_LEN_LOG2_W             =  8;
  localparam int CAP2_MSIX_VECTORS_LSB                =  8;
  localparam int CAP2_MSIX_VECTORS_W                  =  8;
  localparam int CAP2_MAX_READS_LSB                   = 16;
  localparam int CAP2_MAX_READS_W                     =  8;
  localparam int GCTRL_ENABLE_LSB                     =  0;
  localparam int GCTRL_ENABLE_W                       =  1;
  localparam int GCTRL_SOFT_RESET_LSB                 =  1;
  localparam int GCTRL_SOFT_RESET_W                   =  1;
  localparam int GSTATUS_ENABLED_LSB                  =  0;
  localparam int GSTATUS_ENABLED_W                    =  1;
  localparam int GSTATUS_RESET_BUSY_LSB               =  1;
  localparam int GSTATUS_RESET_BUSY_W                 =  1;
  localparam int GSTATUS_QUIESCENT_LSB                =  2;
  localparam int GSTATUS_QUIESCENT_W                  =  1;
  localparam int GSTATUS_ERR_CHANNELS_LSB             = 16;
  localparam int GSTATUS_ERR_CHANNELS_W               = 16;
  localparam int ERR_VEC_VECTOR_LSB                   =  0;
  localparam int ERR_VEC_VECTOR_W                     =  8;
  localparam int RD_OUTSTANDING_CUR_LSB               =  0;
  localparam int RD_OUTSTANDING_CUR_W                 = 16;

  // ---- fault-injection registers (absolute BAR0 offsets, contract D7)
  localparam logic [31:0] REG_FI_STALL             = 32'h0000_0100; // RW Fault injection: stall channels (D7).
  localparam logic [31:0] REG_FI_ONESHOT           = 32'h0000_0104; // RW Fault injection: one-shot faults. Each fault bit is self-clearing once the fault has been applied.
  localparam logic [31:0] REG_FI_COUNT             = 32'h0000_0108; // RO Number of one-shot faults applied since reset.

  localparam int FI_STALL_CHANNELS_LSB                =  0;
  localparam int FI_STALL_CHANNELS_W                  = 16;
  localparam int FI_ONESHOT_DROP_IRQ_LSB              =  0;
  localparam int FI_ONESHOT_DROP_IRQ_W                =  1;
  localparam int FI_ONESHOT_DUP_IRQ_LSB               =  1;
  localparam int FI_ONESHOT_DUP_IRQ_W                 =  1;
  localparam int FI_ONESHOT_CORRUPT_WB_LSB            =  2;
  localparam int FI_ONESHOT_CORRUPT_WB_W              =  1;
  localparam int FI_ONESHOT_DESC_ERR_LSB              =  3;
  localparam int FI_ONESHOT_DESC_ERR_W                =  1;
  localparam int FI_ONESHOT_CHANNEL_LSB               =  8;
  localparam int FI_ONESHOT_CHANNEL_W                 =  4;

  // ---- channel registers (offsets within a channel block)
  localparam logic [31:0] CHANNEL_BASE   = 32'h0000_1000;
  localparam logic [31:0] CHANNEL_STRIDE = 32'h0000_0100;
  localparam logic [31:0] CHREG_RING_LO              = 32'h0000_0000; // RW Ring base IOVA, low half. Must be 32-byte aligned.
  localparam logic [31:0] CHREG_RING_HI              = 32'h0000_0004; // RW Ring base IOVA, high half.
  localparam logic [31:0] CHREG_RING_SIZE            = 32'h0000_0008; // RW Ring size in descriptors: a power of two from 2 to 2^RING_LOG2_MAX. Checked when RUN is set.
  localparam logic [31:0] CHREG_TAIL                 = 32'h0000_000C; // RW Doorbell: free-running index one past the last descriptor software has written. TAIL - HEAD must not exceed RING_SIZE.
  localparam logic [31:0] CHREG_HEAD                 = 32'h0000_0010; // RO Free-running index of the next descriptor to complete: every descriptor before it is done.
  localparam logic [31:0] CHREG_WB_LO                = 32'h0000_0014; // RW Writeback IOVA, low half. Must be 16-byte aligned.
  localparam logic [31:0] CHREG_WB_HI                = 32'h0000_0018; // RW Writeback IOVA, high half.
  localparam logic [31:0] CHREG_CTRL                 = 32'h0000_001C; // RW Channel control.
  localparam logic [31:0] CHREG_STATUS               = 32'h0000_0020; // RO Channel status.
  localparam logic [31:0] CHREG_ERR_INDEX            = 32'h0000_0024; // RO Free-running index of the descriptor that halted the channel.
  localparam logic [31:0] CHREG_IRQ_COUNT            = 32'h0000_0028; // RW Interrupt moderation: count threshold.
  localparam logic [31:0] CHREG_IRQ_TIMER            = 32'h0000_002C; // RW Interrupt moderation: raise the interrupt this many device cycles after the first pending completion, even if THRESHOLD is not reached (0 = no timer).
  localparam logic [31:0] CHREG_IRQ_VEC              = 32'h0000_0030; // RW Completion interrupt vector; resets to the channel number.
  localparam logic [31:0] CHREG_BYTES_LO             = 32'h0000_0034; // RO Bytes the channel has written since reset, low half (progress for the watchdog, F3). Reading it latches BYTES_HI.
  localparam logic [31:0] CHREG_BYTES_HI             = 32'h0000_0038; // RO Bytes written, high half as latched by the last BYTES_LO read.

  localparam int CH_CTRL_RUN_LSB                      =  0;
  localparam int CH_CTRL_RUN_W                        =  1;
  localparam int CH_CTRL_RESET_LSB                    =  1;
  localparam int CH_CTRL_RESET_W                      =  1;
  localparam int CH_STATUS_STATE_LSB                  =  0;
  localparam int CH_STATUS_STATE_W                    =  2;
  localparam int CH_STATUS_ERR_LSB                    =  8;
  localparam int CH_STATUS_ERR_W                      =  8;
  localparam int CH_IRQ_COUNT_THRESHOLD_LSB           =  0;
  localparam int CH_IRQ_COUNT_THRESHOLD_W             = 16;
  localparam int CH_IRQ_VEC_VECTOR_LSB                =  0;
  localparam int CH_IRQ_VEC_VECTOR_W                  =  8;

  // ---- channel states (STATUS.STATE)
  localparam logic [1:0] STATE_STOPPED   = 2'd0;
  localparam logic [1:0] STATE_RUNNING   = 2'd1;
  localparam logic [1:0] STATE_HALTED    = 2'd2;
  localparam logic [1:0] STATE_STOPPING  = 2'd3;

  // ---- channel error codes (STATUS.ERR)
  localparam logic [7:0] ERR_NONE          = 8'd0; // no error
  localparam logic [7:0] ERR_DESC_LEN      = 8'd1; // descriptor length zero or above the maximum
  localparam logic [7:0] ERR_DESC_DIR      = 8'd2; // reserved direction code
  localparam logic [7:0] ERR_DESC_RSVD     = 8'd3; // reserved flag bits set or bad magic
  localparam logic [7:0] ERR_CARD_RANGE    = 8'd4; // card-memory range exceeded
  localparam logic [7:0] ERR_FETCH_FAULT   = 8'd5; // descriptor fetch faulted (IOMMU)
  localparam logic [7:0] ERR_READ_FAULT    = 8'd6; // data read faulted (IOMMU)
  localparam logic [7:0] ERR_BAD_RING      = 8'd7; // invalid ring or writeback configuration
  localparam logic [7:0] ERR_BAD_DOORBELL  = 8'd8; // doorbell beyond ring capacity
  localparam logic [7:0] ERR_INJECTED      = 8'd9; // descriptor error injected (D7)

  // ---- descriptor layout (little-endian, byte offsets)
  localparam int DESC_BYTES = 32;
  localparam int DESC_OFF_SRC    = 0;
  localparam int DESC_OFF_DST    = 8;
  localparam int DESC_OFF_LEN    = 16;
  localparam int DESC_OFF_FLAGS  = 20;
  localparam int DESC_OFF_TAG    = 24;
  localparam int DESC_OFF_MAGIC  = 28;
  localparam logic [31:0] DESC_MAGIC = 32'hD35C_FD3A;
  localparam logic [31:0] FLAG_DIR_MASK = 32'h0000_0003;
  localparam logic [31:0] FLAG_IRQ      = 32'h0000_0004;
  localparam logic [31:0] FLAG_EOJ      = 32'h0000_0008;
  localparam logic [31:0] FLAG_RESERVED = 32'hFFFF_FFF0;
  localparam logic [1:0] DIR_H2C = 2'd0;
  localparam logic [1:0] DIR_C2H = 2'd1;
  localparam logic [1:0] DIR_H2H = 2'd2;

  // ---- writeback layout (little-endian, byte offsets)
  localparam int WB_BYTES = 16;
  localparam int WB_OFF_HEAD      = 0;
  localparam int WB_OFF_STATUS    = 4;
  localparam int WB_OFF_ERR_INDEX = 8;
  localparam int WB_OFF_COUNT     = 12;

  /* verilator lint_on UNUSEDPARAM */

endpackage
