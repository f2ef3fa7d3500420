// fdma_top - the fdma DMA engine (port contract: fpga/rtl/PORTS.md; register,
// descriptor and writeback contract: fdma_hw_pkg, rendered from hw/src).
//
// Micro-architecture
// ------------------
//   registers  fdma_top decodes BAR0 (global + fault-injection blocks here,
//              channel blocks in fdma_channel). Responses are registered, one
//              cycle after the request. CYCLE_LO / BYTES_LO reads latch _HI.
//
//   channels   fdma_channel x CHANNELS: ring/WB config, TAIL/HEAD, state
//              machine (STOPPED/RUNNING/STOPPING/HALTED, channel reset),
//              a DQ_DEPTH-entry prefetched descriptor queue, the descriptor in
//              progress ("cur"), writeback and interrupt-moderation state.
//              Ring config is checked when RUN takes effect, doorbells when TAIL
//              is written.
//
//   issue      fdma_issue: round-robin fetch arbiter (fetches of up to
//              DQ_DEPTH descriptors, never past the ring end / 4 KiB /
//              2^MAX_READ_LOG2) and round-robin chunk arbiter (chunk = at most
//              4 KiB of a descriptor, the fairness granule). A chosen chunk is
//              queued in the chunk queue (CQ_DEPTH) and its reads are split at
//              2^MAX_READ_LOG2-aligned addresses and issued back to back on
//              the host or card read port. Up to MAX_READS reads per port are
//              outstanding, so reads for later chunks are in flight while
//              earlier data drains (pipelining under read latency).
//
//   completions  Host completions enter a RSP_DEPTH response FIFO (rsp_ready
//              = not full, a registered decode). A request-kind FIFO, pushed at
//              each accepted host request, says in order whether the head
//              completion is a descriptor fetch (-> fdma_fetch: split,
//              validate in Descriptor::check order, deliver to the channel) or
//              data (-> realigner). Card completions have their own FIFO and
//              are always data.
//
//   datapath   fdma_realign takes the chunk queue head and its source words,
//              realigns them to the destination with one 2*DW barrel shift and
//              emits aligned write beats, cut into requests at
//              2^MAX_PAYLOAD_LOG2 (so never across 4 KiB), strobes contiguous.
//              It discards data of halted/resetting channels, turns read errors
//              into ERR_READ_FAULT halts and error markers (invalid
//              descriptors, fetch faults, injected errors) into halts, in order.
//
//   output     One registered write stage shared by the host and card write
//              ports (hw_valid/cw_valid select by destination). A beat that
//              completes a descriptor bumps HEAD when accepted; the stage
//              then stays empty one cycle so the writeback it triggers is the
//              very next thing loaded (writebacks win over data, but only at
//              write-request boundaries). So writebacks are ordered after the
//              data they report, and HEAD in a writeback is exact.
//
//   interrupts Moderation counts a completion when its writeback beat is
//              accepted, so every interrupt follows its writeback; the error
//              vector is raised when a halt writeback is accepted. One
//              registered irq stage.
//
//   reset      rst_n resets everything. GCTRL.SOFT_RESET kills every channel
//              (no new work, data discarded), waits until reads, queues and
//              the output/irq stages are empty (RESET_BUSY), then pulses the
//              core reset: every register except the cycle counter returns
//              to its reset value. The register response stage is outside the
//              core reset so the response timing rule always holds.
//
// Timing rule (PORTS.md): every output is a register or a decode of registers
// (FIFO pointers for *_rsp_ready); inputs only steer next-state logic.
module fdma_top import fdma_hw_pkg::*; #(
    parameter int CHANNELS          = DEF_CHANNELS,
    parameter int DATA_BYTES_LOG2   = DEF_DATA_BYTES_LOG2,
    parameter int CARD_MEM_LOG2     = DEF_CARD_MEM_LOG2,
    parameter int MAX_PAYLOAD_LOG2  = DEF_MAX_PAYLOAD_LOG2,
    parameter int MAX_READ_LOG2     = DEF_MAX_READ_LOG2,
    parameter int MAX_DESC_LEN_LOG2 = DEF_MAX_DESC_LEN_LOG2,
    parameter int MAX_READS         = DEF_MAX_READS,
    parameter int RING_LOG2_MAX     = DEF_RING_LOG2_MAX,
    parameter int CLOCK_MHZ         = DEF_CLOCK_MHZ,
    parameter int FAULT_INJ         = DEF_FAULT_INJ
) (
    input  logic                                clk,
    input  logic                                rst_n,
    // register slave
    input  logic                                reg_req_valid,
    input  logic                                reg_req_write,
    input  logic [16:0]                         reg_req_addr,
    input  logic [31:0]                         reg_req_wdata,
    output logic                                reg_rsp_valid,
    output logic [31:0]                         reg_rsp_rdata,
    // host-memory read
    output logic                                hr_req_valid,
    input  logic                                hr_req_ready,
    output logic [63:0]                         hr_req_addr,
    output logic [12:0]                         hr_req_len,
    input  logic                                hr_rsp_valid,
    output logic                                hr_rsp_ready,
    input  logic [(8<<DATA_BYTES_LOG2)-1:0]     hr_rsp_data,
    input  logic                                hr_rsp_last,
    input  logic                                hr_rsp_err,
    // host-memory write
    output logic                                hw_valid,
    input  logic                                hw_ready,
    output logic [63:0]                         hw_addr,
    output logic [(8<<DATA_BYTES_LOG2)-1:0]     hw_data,
    output logic [(1<<DATA_BYTES_LOG2)-1:0]     hw_strb,
    output logic                                hw_last,
    // card-memory read
    output logic                                cr_req_valid,
    input  logic                                cr_req_ready,
    output logic [63:0]                         cr_req_addr,
    output logic [12:0]                         cr_req_len,
    input  logic                                cr_rsp_valid,
    output logic                                cr_rsp_ready,
    input  logic [(8<<DATA_BYTES_LOG2)-1:0]     cr_rsp_data,
    input  logic                                cr_rsp_last,
    input  logic                                cr_rsp_err,
    // card-memory write
    output logic                                cw_valid,
    input  logic                                cw_ready,
    output logic [63:0]                         cw_addr,
    output logic [(8<<DATA_BYTES_LOG2)-1:0]     cw_data,
    output logic [(1<<DATA_BYTES_LOG2)-1:0]     cw_strb,
    output logic                                cw_last,
    // interrupts
    output logic                                irq_valid,
    input  logic                                irq_ready,
    output logic [7:0]                          irq_vector,
    // status
    output logic                                quiescent,
    output logic [63:0]                         cycle_count
);
  localparam int DBL       = DATA_BYTES_LOG2;
  localparam int DB        = 1 << DBL;
  localparam int DW        = 8 * DB;
  localparam int C         = CHANNELS;
  localparam int CHW       = (C > 1) ? $clog2(C) : 1;
  localparam int DQ_DEPTH  = 4;
  localparam int KW        = $clog2(DQ_DEPTH + 1);
  localparam int SW        = (DBL > 5) ? DBL - 5 : 1;
  localparam int DESC_W    = 172;
  localparam int RSP_DEPTH = 4;
  localparam int KQ_DEPTH  = 1 << $clog2(MAX_READS + RSP_DEPTH);
  localparam int CQ_DEPTH  = 8;

  // Configurations this implementation does not build (see report): the
  // writeback must fit one beat and a beat must hold whole descriptors.
  // (Icarus 11 cannot elaborate $error in generate blocks.)
`ifndef __ICARUS__
  if (DBL < 5 || DBL > 6) begin : g_bad_db
    $error("fdma_top: DATA_BYTES_LOG2 must be 5 or 6");
  end
  if (C < 1 || C > MAX_CHANNELS) begin : g_bad_ch
    $error("fdma_top: CHANNELS must be 1..16");
  end
  if (RING_LOG2_MAX < 1 || RING_LOG2_MAX > RING_LOG2_LIMIT) begin : g_bad_ring
    $error("fdma_top: RING_LOG2_MAX out of range");
  end
`endif

  // ------------------------------------------------------------ resets, cycle counter
  logic        srst_busy, srst_fire, core_rst;
  assign core_rst = !rst_n || srst_fire;

  logic [63:0] cycle;
  always_ff @(posedge clk) begin
    if (!rst_n) cycle <= '0;
    else        cycle <= cycle + 64'd1;
  end
  assign cycle_count = cycle;

  // ------------------------------------------------------------ register decode
  // The engine serves BAR0 below MSIX_TABLE_OFFSET (the bridge owns the
  // MSI-X table and PBA above it).
  logic        g_wr, g_rd, ch_blk, a_mapped;
  logic [3:0]  ch_sel;
  logic [7:0]  ch_off;
  logic [16:0] a;
  logic [31:0] a_ch;
  assign a        = reg_req_addr;
  assign a_mapped = ({15'd0, a} < MSIX_TABLE_OFFSET);
  assign g_wr     = reg_req_valid && reg_req_write && a_mapped;
  assign g_rd     = reg_req_valid && !reg_req_write && a_mapped;
  assign a_ch     = {15'd0, a} - CHANNEL_BASE;
  assign ch_sel   = 4'(a_ch / CHANNEL_STRIDE);
  assign ch_off   = 8'(a_ch % CHANNEL_STRIDE);
  assign ch_blk   = a_mapped && ({15'd0, a} >= CHANNEL_BASE) &&
                    ({15'd0, a} < CHANNEL_BASE + 32'(C) * CHANNEL_STRIDE);

  // ------------------------------------------------------------ global registers
  logic        enable;
  logic [7:0]  err_vec;
  logic [31:0] scratch, cycle_hi_l, rd_max, fi_count;
  logic [15:0] fi_stall;
  logic        fi_drop, fi_dup, fi_corrupt, fi_derr;
  logic [3:0]  fi_ch;

  // per-channel wiring
  logic [C-1:0]           ch_wr, ch_rd;
  logic [C-1:0][31:0]     ch_rdata;
  logic [C-1:0]           fetch_want, fetch_grant, chunk_want, chunk_grant;
  logic [C-1:0][63:0]     fetch_addr, c_src, c_dst, wb_addr;
  logic [C-1:0][KW-1:0]   fetch_k;
  logic [C-1:0]           c_pseudo, c_src_card, c_dst_card, c_lastdesc, c_irq, c_eoj;
  logic [C-1:0][7:0]      c_err, irq_vec;
  logic [C-1:0][12:0]     c_n;
  logic [C-1:0][31:0]     c_idx;
  logic [C-1:0][127:0]    wb_rec;
  logic [C-1:0]           wb_want, wb_irq, wb_halt, wb_grant, irq_want, irq_grant, eirq_want, eirq_grant;
  logic [C-1:0]           killed, err_halted, ch_busy, out_holds, desc_arrive, chunk_done;
  logic [C-1:0]           fi_t_derr, fi_t_drop, fi_t_dup, fi_t_corrupt;
  logic [C-1:0]           ev_complete, ev_bytes, ev_wb_done, ev_halt;

  logic [31:0] reg_rdata;
  logic        quiescent_w;
  // A register field from the package's LSB/width pair.
  function automatic logic [31:0] fld(input logic [31:0] v, input int lsb, input int w);
    return (v & ((32'd1 << w) - 32'd1)) << lsb;
  endfunction
  localparam logic [31:0] CAP0_V = fld(32'(C), CAP0_CHANNELS_LSB, CAP0_CHANNELS_W) |
                                   fld(32'(RING_LOG2_MAX), CAP0_RING_LOG2_MAX_LSB, CAP0_RING_LOG2_MAX_W) |
                                   fld(32'(DEF_DMA_ADDR_BITS), CAP0_DMA_ADDR_BITS_LSB, CAP0_DMA_ADDR_BITS_W) |
                                   fld(32'(DBL), CAP0_DATA_BYTES_LOG2_LSB, CAP0_DATA_BYTES_LOG2_W) |
                                   fld(32'(FAULT_INJ != 0), CAP0_FAULT_INJ_LSB, CAP0_FAULT_INJ_W);
  localparam logic [31:0] CAP1_V = fld(32'(CLOCK_MHZ), CAP1_CLOCK_MHZ_LSB, CAP1_CLOCK_MHZ_W) |
                                   fld(32'(CARD_MEM_LOG2), CAP1_CARD_MEM_LOG2_LSB, CAP1_CARD_MEM_LOG2_W) |
                                   fld(32'(MAX_PAYLOAD_LOG2), CAP1_MAX_PAYLOAD_LOG2_LSB, CAP1_MAX_PAYLOAD_LOG2_W) |
                                   fld(32'(MAX_READ_LOG2), CAP1_MAX_READ_LOG2_LSB, CAP1_MAX_READ_LOG2_W);
  localparam logic [31:0] CAP2_V = fld(32'(MAX_DESC_LEN_LOG2), CAP2_MAX_DESC_LEN_LOG2_LSB, CAP2_MAX_DESC_LEN_LOG2_W) |
                                   fld(32'(C + 1), CAP2_MSIX_VECTORS_LSB, CAP2_MSIX_VECTORS_W) |
                                   fld(32'(MAX_READS), CAP2_MAX_READS_LSB, CAP2_MAX_READS_W);
  // ID is served as the package's ID_VALUE, rebuilt from its fields so a
  // change of the field layout shows up here.
  localparam logic [31:0] ID_V = fld(32'(ID_VALUE[ID_MAGIC_LSB +: ID_MAGIC_W]), ID_MAGIC_LSB, ID_MAGIC_W) |
                                 fld(32'(ID_VALUE[ID_MAJOR_LSB +: ID_MAJOR_W]), ID_MAJOR_LSB, ID_MAJOR_W) |
                                 fld(32'(ID_VALUE[ID_MINOR_LSB +: ID_MINOR_W]), ID_MINOR_LSB, ID_MINOR_W);
  // PCI identity, the MSI-X PBA and the descriptor tag belong to the bridge /
  // software, not to the engine; this keeps -Wall quiet about them without a
  // file-wide waiver on the generated package.
  /* verilator lint_off UNUSEDPARAM */
  localparam logic [31:0] NOT_ENGINE = {PCI_VENDOR_ID, PCI_DEVICE_ID} ^ MSIX_PBA_OFFSET ^ 32'(DESC_OFF_TAG);
  /* verilator lint_on UNUSEDPARAM */
  localparam bit FI = (FAULT_INJ != 0);

  logic [15:0] hr_out;
  logic [15:0] err_ch16;
  assign err_ch16 = 16'(err_halted);

  always_comb begin
    reg_rdata = 32'd0;
    if (ch_blk) reg_rdata = ch_rdata[ch_sel[CHW-1:0]];
    else if (!a_mapped) reg_rdata = 32'd0;
    else case ({15'd0, a})
      REG_ID:                 reg_rdata = ID_V;
      REG_CAP0:               reg_rdata = CAP0_V;
      REG_CAP1:               reg_rdata = CAP1_V;
      REG_CAP2:               reg_rdata = CAP2_V;
      REG_GCTRL:              reg_rdata = fld(32'(enable), GCTRL_ENABLE_LSB, GCTRL_ENABLE_W) |
                                          fld(32'(srst_busy), GCTRL_SOFT_RESET_LSB, GCTRL_SOFT_RESET_W);
      REG_GSTATUS:            reg_rdata = fld(32'(enable), GSTATUS_ENABLED_LSB, GSTATUS_ENABLED_W) |
                                          fld(32'(srst_busy), GSTATUS_RESET_BUSY_LSB, GSTATUS_RESET_BUSY_W) |
                                          fld(32'(quiescent_w), GSTATUS_QUIESCENT_LSB, GSTATUS_QUIESCENT_W) |
                                          fld(32'(err_ch16), GSTATUS_ERR_CHANNELS_LSB, GSTATUS_ERR_CHANNELS_W);
      REG_ERR_VEC:            reg_rdata = fld(32'(err_vec), ERR_VEC_VECTOR_LSB, ERR_VEC_VECTOR_W);
      REG_SCRATCH:            reg_rdata = scratch;
      REG_CYCLE_LO:           reg_rdata = cycle[31:0];
      REG_CYCLE_HI:           reg_rdata = cycle_hi_l;
      REG_RD_OUTSTANDING:     reg_rdata = fld(32'(hr_out), RD_OUTSTANDING_CUR_LSB, RD_OUTSTANDING_CUR_W);
      REG_RD_OUTSTANDING_MAX: reg_rdata = rd_max;
      REG_FI_STALL:           reg_rdata = FI ? fld(32'(fi_stall), FI_STALL_CHANNELS_LSB, FI_STALL_CHANNELS_W) : 32'd0;
      REG_FI_ONESHOT:         reg_rdata = FI ? (fld(32'(fi_drop), FI_ONESHOT_DROP_IRQ_LSB, FI_ONESHOT_DROP_IRQ_W) |
                                                fld(32'(fi_dup), FI_ONESHOT_DUP_IRQ_LSB, FI_ONESHOT_DUP_IRQ_W) |
                                                fld(32'(fi_corrupt), FI_ONESHOT_CORRUPT_WB_LSB, FI_ONESHOT_CORRUPT_WB_W) |
                                                fld(32'(fi_derr), FI_ONESHOT_DESC_ERR_LSB, FI_ONESHOT_DESC_ERR_W) |
                                                fld(32'(fi_ch), FI_ONESHOT_CHANNEL_LSB, FI_ONESHOT_CHANNEL_W)) : 32'd0;
      REG_FI_COUNT:           reg_rdata = FI ? fi_count : 32'd0;
      default:                reg_rdata = 32'd0;
    endcase
  end

  // The response stage only depends on rst_n: a soft reset must not swallow
  // the response to the access that requested it.
  always_ff @(posedge clk) begin
    if (!rst_n) begin
      reg_rsp_valid <= 1'b0;
      reg_rsp_rdata <= '0;
    end else begin
      reg_rsp_valid <= reg_req_valid;
      reg_rsp_rdata <= g_rd ? reg_rdata : 32'd0;
    end
  end

  always_comb begin
    for (int c = 0; c < C; c++) begin
      ch_wr[c] = g_wr && ch_blk && (32'(ch_sel) == c);
      ch_rd[c] = g_rd && ch_blk && (32'(ch_sel) == c);
    end
  end

  // one-shot faults armed for each channel
  logic [C-1:0] fa_derr, fa_drop, fa_dup, fa_corrupt;
  always_comb begin
    for (int c = 0; c < C; c++) begin
      fa_derr[c]    = FI && fi_derr    && (32'(fi_ch) == c);
      fa_drop[c]    = FI && fi_drop    && (32'(fi_ch) == c);
      fa_dup[c]     = FI && fi_dup     && (32'(fi_ch) == c);
      fa_corrupt[c] = FI && fi_corrupt && (32'(fi_ch) == c);
    end
  end

  logic srst_done;
  always_ff @(posedge clk) begin
    if (core_rst) begin
      enable <= 1'b0; srst_busy <= 1'b0; srst_fire <= 1'b0;
      err_vec <= 8'(C); scratch <= '0; cycle_hi_l <= '0; rd_max <= '0;
      fi_stall <= '0; fi_drop <= 1'b0; fi_dup <= 1'b0; fi_corrupt <= 1'b0; fi_derr <= 1'b0;
      fi_ch <= '0; fi_count <= '0;
    end else begin
      if (32'(hr_out) > rd_max) rd_max <= 32'(hr_out);
      if (g_rd && {15'd0, a} == REG_CYCLE_LO) cycle_hi_l <= cycle[63:32];
      // one-shot faults clear as they are applied
      if (|fi_t_derr)    fi_derr    <= 1'b0;
      if (|fi_t_drop)    fi_drop    <= 1'b0;
      if (|fi_t_dup)     fi_dup     <= 1'b0;
      if (|fi_t_corrupt) fi_corrupt <= 1'b0;
      fi_count <= fi_count + 32'(|fi_t_derr) + 32'(|fi_t_drop) + 32'(|fi_t_dup) + 32'(|fi_t_corrupt);
      if (g_wr) begin
        case ({15'd0, a})
          REG_GCTRL: begin
            enable <= reg_req_wdata[GCTRL_ENABLE_LSB +: GCTRL_ENABLE_W];
            if (reg_req_wdata[GCTRL_SOFT_RESET_LSB +: GCTRL_SOFT_RESET_W] != '0) srst_busy <= 1'b1;
          end
          REG_ERR_VEC:            err_vec <= reg_req_wdata[ERR_VEC_VECTOR_LSB +: ERR_VEC_VECTOR_W];
          REG_SCRATCH:            scratch <= reg_req_wdata;
          REG_RD_OUTSTANDING_MAX: rd_max  <= reg_req_wdata;
          REG_FI_STALL:   if (FI) fi_stall <= reg_req_wdata[FI_STALL_CHANNELS_LSB +: FI_STALL_CHANNELS_W];
          REG_FI_ONESHOT: if (FI) begin
            fi_drop    <= reg_req_wdata[FI_ONESHOT_DROP_IRQ_LSB];
            fi_dup     <= reg_req_wdata[FI_ONESHOT_DUP_IRQ_LSB];
            fi_corrupt <= reg_req_wdata[FI_ONESHOT_CORRUPT_WB_LSB];
            fi_derr    <= reg_req_wdata[FI_ONESHOT_DESC_ERR_LSB];
            fi_ch      <= reg_req_wdata[FI_ONESHOT_CHANNEL_LSB +: FI_ONESHOT_CHANNEL_W];
          end
          default: ;
        endcase
      end
      if (srst_busy && srst_done) srst_fire <= 1'b1;
    end
  end

  // ------------------------------------------------------------ host completion path
  logic          hrf_empty, hrf_full, hrf_pop, hrf_last, hrf_err;
  logic [DW-1:0] hrf_data;
  logic [DW+1:0] hrf_dout;
  logic [$clog2(RSP_DEPTH):0] hrf_cnt;
  fdma_fifo #(.W(DW + 2), .DEPTH(RSP_DEPTH)) u_hrf (
      .clk, .rst(core_rst), .clr(1'b0), .push(hr_rsp_valid && hr_rsp_ready),
      .din({hr_rsp_err, hr_rsp_last, hr_rsp_data}), .pop(hrf_pop), .dout(hrf_dout),
      .empty(hrf_empty), .full(hrf_full), .count(hrf_cnt));
  assign hr_rsp_ready = !hrf_full;
  assign {hrf_err, hrf_last, hrf_data} = hrf_dout;

  logic          kq_push, kq_fetch_i, kq_empty, kq_full, kq_fetch;
  logic [CHW-1:0] kq_ch_i, kq_ch;
  logic [KW-1:0]  kq_k_i, kq_k;
  logic [SW-1:0]  kq_slot_i, kq_slot;
  logic [$clog2(KQ_DEPTH):0] kq_cnt;
  fdma_fifo #(.W(1 + CHW + KW + SW), .DEPTH(KQ_DEPTH)) u_kq (
      .clk, .rst(core_rst), .clr(1'b0), .push(kq_push), .din({kq_fetch_i, kq_ch_i, kq_k_i, kq_slot_i}),
      .pop(hrf_pop && hrf_last), .dout({kq_fetch, kq_ch, kq_k, kq_slot}),
      .empty(kq_empty), .full(kq_full), .count(kq_cnt));

  logic          crf_empty, crf_full, crf_pop, crf_last, crf_err;
  logic [DW-1:0] crf_data;
  logic [DW+1:0] crf_dout;
  logic [$clog2(RSP_DEPTH):0] crf_cnt;
  fdma_fifo #(.W(DW + 2), .DEPTH(RSP_DEPTH)) u_crf (
      .clk, .rst(core_rst), .clr(1'b0), .push(cr_rsp_valid && cr_rsp_ready),
      .din({cr_rsp_err, cr_rsp_last, cr_rsp_data}), .pop(crf_pop), .dout(crf_dout),
      .empty(crf_empty), .full(crf_full), .count(crf_cnt));
  assign cr_rsp_ready = !crf_full;
  assign {crf_err, crf_last, crf_data} = crf_dout;

  // descriptor fetch completions
  logic              f_valid, f_pop, f_done, f_arrive;
  logic [DESC_W-1:0] f_desc;
  assign f_valid = !hrf_empty && !kq_empty && kq_fetch;
  fdma_fetch #(.DATA_BYTES_LOG2(DBL), .CARD_MEM_LOG2(CARD_MEM_LOG2), .MAX_DESC_LEN_LOG2(MAX_DESC_LEN_LOG2),
               .KW(KW), .SW(SW), .DESC_W(DESC_W)) u_fetch (
      .clk, .rst(core_rst), .in_valid(f_valid), .in_data(hrf_data), .in_err(hrf_err), .k(kq_k),
      .slot0(kq_slot), .in_pop(f_pop), .done(f_done), .arrive(f_arrive), .desc(f_desc));
  always_comb for (int c = 0; c < C; c++) desc_arrive[c] = f_arrive && (32'(kq_ch) == c);

  // ------------------------------------------------------------ issue
  logic           cq_push, cq_full, cq_empty, cq_pop, issue_busy;
  logic [CHW-1:0] cq_ch_i;
  fdma_issue #(.CHANNELS(C), .CHW(CHW), .KW(KW), .SW(SW), .DATA_BYTES_LOG2(DBL),
               .MAX_READ_LOG2(MAX_READ_LOG2), .MAX_READS(MAX_READS)) u_issue (
      .clk, .rst(core_rst),
      .fetch_want, .fetch_addr, .fetch_k, .fetch_grant,
      .chunk_want, .c_pseudo, .c_src, .c_n, .c_src_card, .chunk_grant,
      .cq_push, .cq_ch(cq_ch_i), .cq_full,
      .hr_req_valid, .hr_req_ready, .hr_req_addr, .hr_req_len,
      .hr_done(hr_rsp_valid && hr_rsp_ready && hr_rsp_last),
      .kq_push, .kq_fetch(kq_fetch_i), .kq_ch(kq_ch_i), .kq_k(kq_k_i), .kq_slot(kq_slot_i), .hr_out,
      .cr_req_valid, .cr_req_ready, .cr_req_addr, .cr_req_len,
      .cr_done(cr_rsp_valid && cr_rsp_ready && cr_rsp_last), .busy(issue_busy));

  // chunk queue: {ch, pseudo, err, src_card, dst_card, soff, dst, n, lastdesc, irq, eoj, idx}
  localparam int CQ_W = CHW + 1 + 8 + 1 + 1 + DBL + 64 + 13 + 3 + 32;
  logic [CQ_W-1:0] cq_din, cq_dout;
  logic [CHW-1:0]  q_ch;
  logic            q_pseudo, q_src_card, q_dst_card, q_lastdesc, q_irq, q_eoj;
  logic [7:0]      q_err;
  logic [DBL-1:0]  q_soff;
  logic [63:0]     q_dst;
  logic [12:0]     q_n;
  logic [31:0]     q_idx;
  logic [$clog2(CQ_DEPTH):0] cq_cnt;
  logic [DBL-1:0] sel_soff;
  assign sel_soff = DBL'(c_src[cq_ch_i]);
  assign cq_din = {cq_ch_i, c_pseudo[cq_ch_i], c_err[cq_ch_i], c_src_card[cq_ch_i], c_dst_card[cq_ch_i],
                   sel_soff, c_dst[cq_ch_i], c_n[cq_ch_i], c_lastdesc[cq_ch_i],
                   c_irq[cq_ch_i], c_eoj[cq_ch_i], c_idx[cq_ch_i]};
  fdma_fifo #(.W(CQ_W), .DEPTH(CQ_DEPTH)) u_cq (
      .clk, .rst(core_rst), .clr(1'b0), .push(cq_push), .din(cq_din), .pop(cq_pop), .dout(cq_dout),
      .empty(cq_empty), .full(cq_full), .count(cq_cnt));
  assign {q_ch, q_pseudo, q_err, q_src_card, q_dst_card, q_soff, q_dst, q_n, q_lastdesc, q_irq, q_eoj, q_idx} = cq_dout;
  always_comb for (int c = 0; c < C; c++) chunk_done[c] = cq_pop && (32'(q_ch) == c);

  // ------------------------------------------------------------ realigner
  logic              out_valid, out_card, out_last, out_complete, out_cirq, out_ceoj;
  logic              out_is_wb, out_wb_irq, out_wb_halt;
  logic [CHW-1:0]    out_ch;
  logic [63:0]       out_addr;
  logic [DW-1:0]     out_data;
  logic [DB-1:0]     out_strb;
  logic [DBL:0]      out_nbytes;
  logic              out_accept, out_can_load, wb_any, wb_load, ra_ok, ra_req_open;
  logic              ra_in_valid, ra_in_err, ra_in_pop, ra_load, ra_last, ra_complete, ra_halt;
  logic [DW-1:0]     ra_in_data, ra_data;
  logic [63:0]       ra_addr;
  logic [DB-1:0]     ra_strb;
  logic [DBL:0]      ra_nbytes;
  logic [7:0]        ra_halt_code;
  logic [31:0]       ra_halt_idx;

  assign ra_in_valid = q_src_card ? !crf_empty : (!hrf_empty && !kq_empty && !kq_fetch);
  assign ra_in_data  = q_src_card ? crf_data : hrf_data;
  assign ra_in_err   = q_src_card ? crf_err  : hrf_err;
  assign hrf_pop     = f_pop || (ra_in_pop && !q_src_card);
  assign crf_pop     = ra_in_pop && q_src_card;

  fdma_realign #(.DATA_BYTES_LOG2(DBL), .MAX_PAYLOAD_LOG2(MAX_PAYLOAD_LOG2)) u_ra (
      .clk, .rst(core_rst),
      .c_valid(!cq_empty), .c_pseudo(q_pseudo), .c_err(q_err), .c_soff(q_soff), .c_dst(q_dst), .c_n(q_n),
      .c_lastdesc(q_lastdesc), .c_idx(q_idx), .c_killed(killed[q_ch]), .c_pop(cq_pop),
      .in_valid(ra_in_valid), .in_data(ra_in_data), .in_err(ra_in_err), .in_pop(ra_in_pop),
      .out_ok(ra_ok), .out_idle(!out_valid && !wb_any),
      .o_load(ra_load), .o_addr(ra_addr), .o_data(ra_data), .o_strb(ra_strb), .o_last(ra_last),
      .o_complete(ra_complete), .o_nbytes(ra_nbytes), .req_open(ra_req_open),
      .halt_ev(ra_halt), .halt_code(ra_halt_code), .halt_idx(ra_halt_idx));

  // ------------------------------------------------------------ output stage
  assign out_accept   = out_valid && (out_card ? cw_ready : hw_ready);
  // After a descriptor-completing beat the stage idles one cycle: HEAD and
  // the writeback request are registered by then, so the writeback goes next.
  assign out_can_load = !out_valid || (out_accept && !out_complete);
  assign wb_any       = (|wb_want) && !srst_busy;
  assign wb_load      = out_can_load && wb_any && !ra_req_open;
  assign ra_ok        = out_can_load && !(wb_any && !ra_req_open);

  logic [CHW-1:0] wb_sel;
  always_comb begin
    wb_sel = '0;
    for (int c = C - 1; c >= 0; c--) if (wb_want[c]) wb_sel = CHW'(c);
  end
  always_comb for (int c = 0; c < C; c++) wb_grant[c] = wb_load && (wb_sel == CHW'(c));

  logic [63:0]   wb_a;
  logic [DW-1:0] wb_beat;
  logic [DB-1:0] wb_strb;
  always_comb begin
    // WB is 16-byte aligned (checked at RUN); the low bits are ignored.
    wb_a    = wb_addr[wb_sel] & ~64'hF;
    wb_beat = DW'(wb_rec[wb_sel]) << (32'(wb_a[DBL-1:0]) * 8);
    wb_strb = DB'({WB_BYTES{1'b1}}) << wb_a[DBL-1:0];
  end

  always_ff @(posedge clk) begin
    if (core_rst) begin
      out_valid <= 1'b0; out_card <= 1'b0; out_last <= 1'b0; out_complete <= 1'b0;
      out_cirq <= 1'b0; out_ceoj <= 1'b0; out_is_wb <= 1'b0; out_wb_irq <= 1'b0; out_wb_halt <= 1'b0;
      out_ch <= '0; out_addr <= '0; out_data <= '0; out_strb <= '0; out_nbytes <= '0;
    end else begin
      if (out_accept) out_valid <= 1'b0;
      if (wb_load) begin
        out_valid <= 1'b1; out_card <= 1'b0; out_last <= 1'b1; out_complete <= 1'b0;
        out_cirq <= 1'b0; out_ceoj <= 1'b0; out_is_wb <= 1'b1;
        out_wb_irq <= wb_irq[wb_sel]; out_wb_halt <= wb_halt[wb_sel];
        out_ch <= wb_sel; out_addr <= {wb_a[63:DBL], {DBL{1'b0}}}; out_data <= wb_beat; out_strb <= wb_strb;
        out_nbytes <= '0;
      end else if (ra_load) begin
        out_valid <= 1'b1; out_card <= q_dst_card; out_last <= ra_last; out_complete <= ra_complete;
        out_cirq <= q_irq; out_ceoj <= q_eoj; out_is_wb <= 1'b0; out_wb_irq <= 1'b0; out_wb_halt <= 1'b0;
        out_ch <= q_ch; out_addr <= ra_addr; out_data <= ra_data; out_strb <= ra_strb; out_nbytes <= ra_nbytes;
      end
    end
  end

  assign hw_valid = out_valid && !out_card;
  assign hw_addr  = out_addr;
  assign hw_data  = out_data;
  assign hw_strb  = out_strb;
  assign hw_last  = out_last;
  assign cw_valid = out_valid && out_card;
  assign cw_addr  = out_addr;
  assign cw_data  = out_data;
  assign cw_strb  = out_strb;
  assign cw_last  = out_last;

  always_comb begin
    for (int c = 0; c < C; c++) begin
      out_holds[c]   = out_valid && (out_ch == CHW'(c));
      ev_complete[c] = out_accept && out_complete && (out_ch == CHW'(c));
      ev_bytes[c]    = out_accept && !out_is_wb && (out_ch == CHW'(c));
      ev_wb_done[c]  = out_accept && out_is_wb && (out_ch == CHW'(c));
      ev_halt[c]     = ra_halt && (q_ch == CHW'(c));
    end
  end

  // ------------------------------------------------------------ interrupt stage
  logic           irq_can, irq_pick_err, irq_any;
  logic [CHW-1:0] irq_sel;
  always_comb begin
    irq_can      = (!irq_valid || irq_ready) && !srst_busy;
    irq_pick_err = 1'b0;
    irq_any      = 1'b0;
    irq_sel      = '0;
    for (int c = C - 1; c >= 0; c--) if (irq_want[c]) begin irq_sel = CHW'(c); irq_any = 1'b1; end
    for (int c = C - 1; c >= 0; c--) if (eirq_want[c]) begin
      irq_sel = CHW'(c); irq_any = 1'b1; irq_pick_err = 1'b1;
    end
    for (int c = 0; c < C; c++) begin
      irq_grant[c]  = irq_can && irq_any && !irq_pick_err && (irq_sel == CHW'(c));
      eirq_grant[c] = irq_can && irq_any && irq_pick_err && (irq_sel == CHW'(c));
    end
  end
  always_ff @(posedge clk) begin
    if (core_rst) begin
      irq_valid  <= 1'b0;
      irq_vector <= '0;
    end else begin
      if (irq_valid && irq_ready) irq_valid <= 1'b0;
      if (irq_can && irq_any) begin
        irq_valid  <= 1'b1;
        irq_vector <= irq_pick_err ? err_vec : irq_vec[irq_sel];
      end
    end
  end

  // ------------------------------------------------------------ channels
  for (genvar g = 0; g < C; g++) begin : g_ch
    fdma_channel #(.CH(g), .RING_LOG2_MAX(RING_LOG2_MAX), .MAX_READ_LOG2(MAX_READ_LOG2),
                   .DQ_DEPTH(DQ_DEPTH), .KW(KW), .DESC_W(DESC_W)) u_ch (
        .clk, .rst(core_rst),
        .reg_wr(ch_wr[g]), .reg_rd(ch_rd[g]), .reg_off(ch_off), .reg_wdata(reg_req_wdata),
        .reg_rdata(ch_rdata[g]),
        .enable, .stall(FI && fi_stall[g]), .srst_busy,
        .fetch_want(fetch_want[g]), .fetch_addr(fetch_addr[g]), .fetch_k(fetch_k[g]),
        .fetch_grant(fetch_grant[g]), .desc_arrive(desc_arrive[g]), .desc_in(f_desc),
        .chunk_want(chunk_want[g]), .c_pseudo(c_pseudo[g]), .c_err(c_err[g]), .c_src(c_src[g]),
        .c_dst(c_dst[g]), .c_n(c_n[g]), .c_src_card(c_src_card[g]), .c_dst_card(c_dst_card[g]),
        .c_lastdesc(c_lastdesc[g]), .c_irq(c_irq[g]), .c_eoj(c_eoj[g]), .c_idx(c_idx[g]),
        .chunk_grant(chunk_grant[g]), .chunk_done(chunk_done[g]),
        .fi_desc_err(fa_derr[g]), .fi_drop_irq(fa_drop[g]), .fi_dup_irq(fa_dup[g]),
        .fi_corrupt_wb(fa_corrupt[g]), .fi_desc_err_take(fi_t_derr[g]), .fi_drop_take(fi_t_drop[g]),
        .fi_dup_take(fi_t_dup[g]), .fi_corrupt_take(fi_t_corrupt[g]),
        .complete(ev_complete[g]), .complete_irq(out_cirq), .complete_eoj(out_ceoj),
        .bytes_en(ev_bytes[g]), .bytes_add(8'(out_nbytes)),
        .halt_ev(ev_halt[g]), .halt_code(ra_halt_code), .halt_idx(ra_halt_idx),
        .wb_want(wb_want[g]), .wb_addr(wb_addr[g]), .wb_rec(wb_rec[g]), .wb_irq(wb_irq[g]),
        .wb_halt(wb_halt[g]), .wb_grant(wb_grant[g]), .wb_done(ev_wb_done[g]),
        .wb_done_irq(out_wb_irq), .wb_done_halt(out_wb_halt),
        .irq_want(irq_want[g]), .irq_vec(irq_vec[g]), .irq_grant(irq_grant[g]),
        .eirq_want(eirq_want[g]), .eirq_grant(eirq_grant[g]),
        .out_holds(out_holds[g]), .killed(killed[g]), .err_halted(err_halted[g]), .busy(ch_busy[g]));
  end

  // ------------------------------------------------------------ status
  assign srst_done = !issue_busy && cq_empty && hrf_empty && crf_empty && kq_empty &&
                     !out_valid && !irq_valid;
  assign quiescent_w = !(|ch_busy) && !issue_busy && cq_empty && hrf_empty && crf_empty && kq_empty &&
                       !out_valid && !irq_valid && !srst_busy && !srst_fire;
  assign quiescent = quiescent_w;

  // Outputs of shared blocks this configuration does not need: FIFO levels
  // (only empty/full matter here), the kind queue's full flag (it is sized for
  // MAX_READS + RSP_DEPTH, so it cannot fill), card 'last' (the realigner
  // counts words itself) and the fetch unit's done (the kind queue pops on
  // the host 'last' beat), the constant NOT_ENGINE.
  /* verilator lint_off UNUSEDSIGNAL */
  logic unused_ok;
  assign unused_ok = ^{hrf_cnt, kq_cnt, crf_cnt, cq_cnt, kq_full, crf_last, f_done, NOT_ENGINE};
  /* verilator lint_on UNUSEDSIGNAL */
endmodule
