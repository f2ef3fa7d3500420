// fdma_channel - one DMA channel: its register block, state machine,
// descriptor prefetch queue, the descriptor in progress ("cur"), writeback
// and interrupt-moderation state.
//
// The channel never touches a bus itself. It raises requests (fetch_want,
// chunk_want, wb_want, irq_want, eirq_want) that the shared units in fdma_top /
// fdma_issue grant, and it is told about events from the datapath (descriptor
// arrived, chunk finished, descriptor completed, halt, writeback accepted).
// Everything it exports is decoded from its own registers.
//
// In-flight accounting (why STOPPING/RESET can tell when they are done):
//   dq_resv    descriptors requested by fetch reads whose beats have not been
//              delivered yet (each delivered descriptor decrements it, also
//              when it is dropped because the channel left RUNNING);
//   chunks_out chunks granted to the issue unit that the realigner has not
//              retired yet (data chunks and error markers alike).
// A channel is drained when both are zero; halted/resetting channels have
// their remaining chunks discarded by the realigner, so draining always ends.
module fdma_channel import fdma_hw_pkg::*; #(
    parameter int CH            = 0,
    parameter int RING_LOG2_MAX = DEF_RING_LOG2_MAX,
    parameter int MAX_READ_LOG2 = DEF_MAX_READ_LOG2,
    parameter int DQ_DEPTH      = 4,
    parameter int KW            = 3,     // $clog2(DQ_DEPTH+1)
    parameter int DESC_W        = 172
) (
    input  logic               clk,
    input  logic               rst,
    // register block access (offset within the channel block)
    input  logic               reg_wr,
    input  logic               reg_rd,
    input  logic [7:0]         reg_off,
    input  logic [31:0]        reg_wdata,
    output logic [31:0]        reg_rdata,
    // global gates
    input  logic               enable,
    input  logic               stall,
    input  logic               srst_busy,
    // descriptor fetch
    output logic               fetch_want,
    output logic [63:0]        fetch_addr,
    output logic [KW-1:0]      fetch_k,
    input  logic               fetch_grant,
    input  logic               desc_arrive,
    input  logic [DESC_W-1:0]  desc_in,
    // chunk issue
    output logic               chunk_want,
    output logic               c_pseudo,
    output logic [7:0]         c_err,
    output logic [63:0]        c_src,
    output logic [63:0]        c_dst,
    output logic [12:0]        c_n,
    output logic               c_src_card,
    output logic               c_dst_card,
    output logic               c_lastdesc,
    output logic               c_irq,
    output logic               c_eoj,
    output logic [31:0]        c_idx,
    input  logic               chunk_grant,
    input  logic               chunk_done,
    // fault injection (armed one-shots already filtered for this channel)
    input  logic               fi_desc_err,
    input  logic               fi_drop_irq,
    input  logic               fi_dup_irq,
    input  logic               fi_corrupt_wb,
    output logic               fi_desc_err_take,
    output logic               fi_drop_take,
    output logic               fi_dup_take,
    output logic               fi_corrupt_take,
    // datapath events
    input  logic               complete,
    input  logic               complete_irq,
    input  logic               complete_eoj,
    input  logic               bytes_en,
    input  logic [7:0]         bytes_add,
    input  logic               halt_ev,
    input  logic [7:0]         halt_code,
    input  logic [31:0]        halt_idx,
    // writeback
    output logic               wb_want,
    output logic [63:0]        wb_addr,
    output logic [127:0]       wb_rec,
    output logic               wb_irq,
    output logic               wb_halt,
    input  logic               wb_grant,
    input  logic               wb_done,
    input  logic               wb_done_irq,
    input  logic               wb_done_halt,
    // interrupts
    output logic               irq_want,
    output logic [7:0]         irq_vec,
    input  logic               irq_grant,
    output logic               eirq_want,
    input  logic               eirq_grant,
    // status
    input  logic               out_holds,   // output stage holds a beat of this channel
    output logic               killed,
    output logic               err_halted,
    output logic               busy
);
  localparam int CHUNK_LOG2 = 12;   // arbitration granule: 4 KiB of source
`ifndef __ICARUS__
  if (CH_STATUS_STATE_W != 2 || CH_STATUS_ERR_W != 8) begin : g_bad_status
    $error("fdma_channel: STATUS field widths changed");
  end
`endif

  // ------------------------------------------------------------ registers
  logic [31:0] ring_lo, ring_hi, ring_size, tail, head, wb_lo, wb_hi;
  logic        run, rst_busy;
  logic [1:0]  state;
  logic [7:0]  err;
  logic [31:0] err_index;
  logic [15:0] irq_thr;
  logic [31:0] irq_timer;
  logic [7:0]  irq_vec_r;
  logic [63:0] bytes;
  logic [31:0] bytes_hi_l, wb_count;

  logic [31:0] fetch_idx, load_idx;
  logic [KW:0] dq_resv;
  logic [7:0]  chunks_out;
  logic        blocked;        // an error marker was issued: load nothing more

  logic        cur_valid, cur_started, cur_irq, cur_eoj;
  logic [63:0] cur_src, cur_dst;
  logic [31:0] cur_rem, cur_idx;
  logic [1:0]  cur_dir;
  logic [7:0]  cur_err;

  logic        wb_req, wb_req_irq, wb_req_halt;
  logic [15:0] mod_pend;
  logic        tmr_armed;
  logic [31:0] tmr_cnt;
  logic [1:0]  irq_cnt;
  logic        eirq;

  // ------------------------------------------------------------ decode
  logic [1:0] disp_state;
  assign disp_state = rst_busy ? STATE_STOPPING : state;
  assign killed     = (state == STATE_HALTED) || rst_busy || srst_busy;
  assign err_halted = (state == STATE_HALTED) && (err != ERR_NONE) && !rst_busy;

  logic wr_ctrl, wr_tail;
  assign wr_ctrl = reg_wr && (reg_off == CHREG_CTRL[7:0]);
  assign wr_tail = reg_wr && (reg_off == CHREG_TAIL[7:0]);

  // Ring configuration check done when RUN takes effect (ERR_BAD_RING).
  logic ring_ok, wb_aligned;
  assign wb_aligned = (wb_lo[3:0] == 4'd0);
  assign ring_ok = (ring_size >= 32'd2) && ((ring_size & (ring_size - 32'd1)) == 32'd0) &&
                   (ring_size <= (32'd1 << RING_LOG2_MAX)) && (ring_lo[4:0] == 5'd0) && wb_aligned;

  logic drained;
  assign drained = (chunks_out == 8'd0) && (dq_resv == '0);

  // ------------------------------------------------------------ descriptor queue
  logic              dq_push, dq_pop, dq_clr, dq_empty, dq_full;
  logic [DESC_W-1:0] dq_dout;
  logic [KW-1:0]     dq_count;

  fdma_fifo #(.W(DESC_W), .DEPTH(DQ_DEPTH)) u_dq (
      .clk, .rst, .clr(dq_clr), .push(dq_push), .din(desc_in), .pop(dq_pop),
      .dout(dq_dout), .empty(dq_empty), .full(dq_full), .count(dq_count));

  // Descriptors are kept only while RUNNING; anything arriving later is the
  // tail of a fetch issued before a stop/halt/reset and is dropped.
  assign dq_push = desc_arrive && (state == STATE_RUNNING) && !killed && !dq_full;

  logic load_cur;
  assign load_cur = !cur_valid && !dq_empty && (state == STATE_RUNNING) && !killed &&
                    !blocked && enable && !stall;
  assign dq_pop = load_cur;

  // --------------------------------------------------------- fetch request
  logic [31:0] avail, slot, to_end, to_4k, credits;
  logic [63:0] f_addr;
  always_comb begin
    avail   = tail - fetch_idx;
    slot    = fetch_idx & (ring_size - 32'd1);
    to_end  = ring_size - slot;
    f_addr  = {ring_hi, ring_lo} + {27'd0, slot, 5'd0};
    to_4k   = {20'd0, 12'd0 - f_addr[11:0]} >> 5;
    if (f_addr[11:0] == 12'd0) to_4k = 32'd128;
    credits = 32'(DQ_DEPTH) - 32'(dq_count) - 32'(dq_resv);
    fetch_k = KW'(credits);
    if (avail  < 32'(fetch_k)) fetch_k = KW'(avail);
    if (to_end < 32'(fetch_k)) fetch_k = KW'(to_end);
    if (to_4k  < 32'(fetch_k)) fetch_k = KW'(to_4k);
    if ((32'd1 << (MAX_READ_LOG2 - 5)) < 32'(fetch_k)) fetch_k = KW'(32'd1 << (MAX_READ_LOG2 - 5));
  end
  assign fetch_addr = f_addr;
  assign fetch_want = (state == STATE_RUNNING) && !killed && enable && !stall && !blocked &&
                      (fetch_idx != tail) && (credits != 32'd0);

  // --------------------------------------------------------- chunk request
  logic [12:0] to_chunk;
  assign to_chunk   = 13'h1000 - {1'b0, cur_src[CHUNK_LOG2-1:0]};
  assign c_n        = (cur_rem < {19'd0, to_chunk}) ? cur_rem[12:0] : to_chunk;
  assign c_lastdesc = (cur_rem == {19'd0, c_n});
  assign c_pseudo   = (cur_err != ERR_NONE);
  assign c_err      = cur_err;
  assign c_src      = cur_src;
  assign c_dst      = cur_dst;
  assign c_src_card = (cur_dir == DIR_C2H);
  assign c_dst_card = (cur_dir == DIR_H2C);
  assign c_irq      = cur_irq;
  assign c_eoj      = cur_eoj;
  assign c_idx      = cur_idx;
  // RUN=0 finishes the descriptor in progress; ENABLE=0 and FI_STALL start
  // nothing new, not even the next chunk of it.
  assign chunk_want = cur_valid && !killed && enable && !stall &&
                      ((state == STATE_RUNNING) || ((state == STATE_STOPPING) && cur_started && !c_pseudo));

  // --------------------------------------------------------- writeback / irq
  assign wb_want  = wb_req && !rst_busy;
  assign wb_addr  = {wb_hi, wb_lo};
  assign wb_irq   = wb_req_irq;
  assign wb_halt  = wb_req_halt;
  logic [31:0] status_v;
  assign status_v = (32'(disp_state) << CH_STATUS_STATE_LSB) | (32'(err) << CH_STATUS_ERR_LSB);
  // Fields placed by shifting rather than by part-select writes in an
  // always_comb: Icarus 11 re-triggers such blocks forever at time 0.
  function automatic logic [127:0] place(input logic [31:0] v, input int off);
    return {96'd0, v} << (off * 8);
  endfunction
  assign wb_rec = place(fi_corrupt_wb ? ~head : head, WB_OFF_HEAD) | place(status_v, WB_OFF_STATUS) |
                  place(err_index, WB_OFF_ERR_INDEX) | place(wb_count + 32'd1, WB_OFF_COUNT);
  assign fi_corrupt_take = wb_grant && fi_corrupt_wb;

  assign irq_want  = (irq_cnt != 2'd0) && !rst_busy;
  assign irq_vec   = irq_vec_r;
  assign eirq_want = eirq && !rst_busy;

  logic [15:0] thr_eff;
  logic        fire;
  assign thr_eff = (irq_thr == 16'd0) ? 16'd1 : irq_thr;
  assign fire    = (mod_pend != 16'd0) && ((mod_pend >= thr_eff) || (tmr_armed && tmr_cnt == 32'd0));
  assign fi_drop_take = fire && fi_drop_irq;
  assign fi_dup_take  = fire && fi_dup_irq && !fi_drop_irq;

  assign fi_desc_err_take = load_cur && fi_desc_err;

  // `fire` counts too: the cycle it is high, irq_cnt has not been loaded yet.
  assign busy = (chunks_out != 8'd0) || (dq_resv != '0) || wb_req || (irq_cnt != 2'd0) || eirq || fire ||
                tmr_armed || rst_busy || (state == STATE_STOPPING) ||
                (enable && (state == STATE_RUNNING) && (head != tail));

  // --------------------------------------------------------- state transitions
  // Halts that the channel detects itself (doorbell, ring check) and halts the
  // datapath reports (descriptor errors, fetch/read faults) take the same path.
  logic        halt_now;
  logic [7:0]  halt_now_code;
  logic [31:0] halt_now_idx;
  logic        start_ok;
  logic        stop_now;
  logic [31:0] db_depth;
  always_comb begin
    halt_now      = 1'b0;
    halt_now_code = ERR_NONE;
    halt_now_idx  = head;
    start_ok      = 1'b0;
    stop_now      = 1'b0;
    db_depth      = reg_wdata - head;
    if (!rst_busy) begin
      if ((state == STATE_RUNNING) || (state == STATE_STOPPING)) begin
        if (halt_ev) begin
          halt_now = 1'b1; halt_now_code = halt_code; halt_now_idx = halt_idx;
        end else if (wr_tail && ((db_depth > ring_size) || (db_depth < (fetch_idx - head)))) begin
          // Doorbell beyond capacity, or moved back behind descriptors the
          // engine already fetched: both make the queue inconsistent.
          halt_now = 1'b1; halt_now_code = ERR_BAD_DOORBELL;
        end else if ((state == STATE_RUNNING) && !run) begin
          stop_now = 1'b1;
        end
      end else if ((state == STATE_STOPPED) && run) begin
        if (!ring_ok) begin
          halt_now = 1'b1; halt_now_code = ERR_BAD_RING;
        end else if ((tail - head) > ring_size) begin
          halt_now = 1'b1; halt_now_code = ERR_BAD_DOORBELL;
        end else begin
          start_ok = 1'b1;
        end
      end
    end
  end

  logic start_reset;
  assign start_reset = wr_ctrl && (reg_wdata[CH_CTRL_RESET_LSB +: CH_CTRL_RESET_W] != '0) && !rst_busy;
  assign dq_clr      = start_reset || halt_now || stop_now;

  // --------------------------------------------------------- register read mux
  always_comb begin
    case (reg_off)
      CHREG_RING_LO[7:0]:   reg_rdata = ring_lo;
      CHREG_RING_HI[7:0]:   reg_rdata = ring_hi;
      CHREG_RING_SIZE[7:0]: reg_rdata = ring_size;
      CHREG_TAIL[7:0]:      reg_rdata = tail;
      CHREG_HEAD[7:0]:      reg_rdata = head;
      CHREG_WB_LO[7:0]:     reg_rdata = wb_lo;
      CHREG_WB_HI[7:0]:     reg_rdata = wb_hi;
      CHREG_CTRL[7:0]:      reg_rdata = (32'(run) << CH_CTRL_RUN_LSB) | (32'(rst_busy) << CH_CTRL_RESET_LSB);
      CHREG_STATUS[7:0]:    reg_rdata = status_v;
      CHREG_ERR_INDEX[7:0]: reg_rdata = err_index;
      CHREG_IRQ_COUNT[7:0]: reg_rdata = {16'd0, irq_thr};
      CHREG_IRQ_TIMER[7:0]: reg_rdata = irq_timer;
      CHREG_IRQ_VEC[7:0]:   reg_rdata = {24'd0, irq_vec_r};
      CHREG_BYTES_LO[7:0]:  reg_rdata = bytes[31:0];
      CHREG_BYTES_HI[7:0]:  reg_rdata = bytes_hi_l;
      default:              reg_rdata = 32'd0;
    endcase
  end

  // --------------------------------------------------------- sequential
  logic [15:0] mod_pend_n;
  always_comb begin
    mod_pend_n = fire ? 16'd0 : mod_pend;
    if (wb_done && wb_done_irq && !rst_busy && (mod_pend_n != 16'hFFFF)) mod_pend_n = mod_pend_n + 16'd1;
  end

  // Completion interrupts still to be signalled (2 for a duplicated one).
  logic [2:0] irq_cnt_w;
  logic [1:0] irq_cnt_n;
  always_comb begin
    irq_cnt_w = {1'b0, irq_cnt} - {2'd0, irq_grant};
    if (fire && !fi_drop_irq) irq_cnt_w = irq_cnt_w + (fi_dup_irq ? 3'd2 : 3'd1);
    irq_cnt_n = (irq_cnt_w > 3'd3) ? 2'd3 : irq_cnt_w[1:0];
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      ring_lo <= '0; ring_hi <= '0; ring_size <= '0; tail <= '0; head <= '0;
      wb_lo <= '0; wb_hi <= '0; run <= 1'b0; rst_busy <= 1'b0;
      state <= STATE_STOPPED; err <= ERR_NONE; err_index <= '0;
      irq_thr <= '0; irq_timer <= '0; irq_vec_r <= 8'(CH);
      bytes <= '0; bytes_hi_l <= '0; wb_count <= '0;
      fetch_idx <= '0; load_idx <= '0; dq_resv <= '0; chunks_out <= '0; blocked <= 1'b0;
      cur_valid <= 1'b0; cur_started <= 1'b0; cur_irq <= 1'b0; cur_eoj <= 1'b0;
      cur_src <= '0; cur_dst <= '0; cur_rem <= '0; cur_idx <= '0; cur_dir <= '0; cur_err <= '0;
      wb_req <= 1'b0; wb_req_irq <= 1'b0; wb_req_halt <= 1'b0;
      mod_pend <= '0; tmr_armed <= 1'b0; tmr_cnt <= '0; irq_cnt <= '0; eirq <= 1'b0;
    end else begin
      // ---- counters that run in every state
      if (bytes_en) bytes <= bytes + {56'd0, bytes_add};
      chunks_out <= chunks_out + {7'd0, chunk_grant} - {7'd0, chunk_done};
      dq_resv    <= dq_resv + (fetch_grant ? {1'b0, fetch_k} : '0) - {{KW{1'b0}}, desc_arrive};

      // ---- register writes
      if (reg_rd && reg_off == CHREG_BYTES_LO[7:0]) bytes_hi_l <= bytes[63:32];
      if (reg_wr) begin
        case (reg_off)
          CHREG_RING_LO[7:0]:   ring_lo   <= reg_wdata;
          CHREG_RING_HI[7:0]:   ring_hi   <= reg_wdata;
          CHREG_RING_SIZE[7:0]: ring_size <= reg_wdata;
          CHREG_TAIL[7:0]:      tail      <= reg_wdata;
          CHREG_WB_LO[7:0]:     wb_lo     <= reg_wdata;
          CHREG_WB_HI[7:0]:     wb_hi     <= reg_wdata;
          CHREG_IRQ_COUNT[7:0]: irq_thr   <= reg_wdata[CH_IRQ_COUNT_THRESHOLD_LSB +: CH_IRQ_COUNT_THRESHOLD_W];
          CHREG_IRQ_TIMER[7:0]: irq_timer <= reg_wdata;
          CHREG_IRQ_VEC[7:0]:   irq_vec_r <= reg_wdata[CH_IRQ_VEC_VECTOR_LSB +: CH_IRQ_VEC_VECTOR_W];
          default: ;
        endcase
      end
      if (wr_ctrl && !rst_busy) run <= reg_wdata[CH_CTRL_RUN_LSB +: CH_CTRL_RUN_W];

      // ---- fetch pointer
      if (fetch_grant) fetch_idx <= fetch_idx + 32'(fetch_k);

      // ---- descriptor in progress
      if (load_cur) begin
        cur_valid   <= 1'b1;
        cur_started <= 1'b0;
        // desc_in layout: {src, dst, len, dir, irq, eoj, err}
        cur_src <= dq_dout[171:108];
        cur_dst <= dq_dout[107:44];
        cur_rem <= dq_dout[43:12];
        cur_dir <= dq_dout[11:10];
        cur_irq <= dq_dout[9];
        cur_eoj <= dq_dout[8];
        cur_err <= fi_desc_err ? ERR_INJECTED : dq_dout[7:0];
        cur_idx <= load_idx;
        load_idx <= load_idx + 32'd1;
      end
      if (chunk_grant) begin
        if (c_pseudo) begin
          cur_valid <= 1'b0;
          blocked   <= 1'b1;
        end else begin
          cur_started <= 1'b1;
          cur_src <= cur_src + {51'd0, c_n};
          cur_dst <= cur_dst + {51'd0, c_n};
          cur_rem <= cur_rem - {19'd0, c_n};
          if (c_lastdesc) begin
            cur_valid   <= 1'b0;
            cur_started <= 1'b0;
          end
        end
      end

      // ---- completion, writeback, moderation
      if (complete && !rst_busy) begin
        head <= head + 32'd1;
        if (complete_irq || complete_eoj) begin
          wb_req <= 1'b1;
          if (complete_irq) wb_req_irq <= 1'b1;
        end
      end
      if (wb_grant) begin
        wb_req <= 1'b0; wb_req_irq <= 1'b0; wb_req_halt <= 1'b0;
        wb_count <= wb_count + 32'd1;
      end
      mod_pend <= mod_pend_n;
      if (fire) tmr_armed <= 1'b0;
      else if (tmr_armed && tmr_cnt != 32'd0) tmr_cnt <= tmr_cnt - 32'd1;
      // The timer starts with the first pending completion (0 = no timer).
      if ((mod_pend_n != 16'd0) && ((mod_pend == 16'd0) || fire) && (irq_timer != 32'd0)) begin
        tmr_armed <= 1'b1;
        tmr_cnt   <= irq_timer;
      end
      irq_cnt <= irq_cnt_n;
      if (wb_done && wb_done_halt && !rst_busy) eirq <= 1'b1;
      else if (eirq_grant) eirq <= 1'b0;

      // ---- channel state machine
      if (start_ok) begin
        state <= STATE_RUNNING;
        fetch_idx <= head;
        load_idx  <= head;
        blocked   <= 1'b0;
      end
      if (stop_now) begin
        state <= STATE_STOPPING;
        if (!cur_started || !cur_valid) cur_valid <= 1'b0;
      end
      if (!rst_busy && state == STATE_STOPPING && drained && !cur_valid) state <= STATE_STOPPED;
      if (halt_now) begin
        state     <= STATE_HALTED;
        err       <= halt_now_code;
        err_index <= halt_now_idx;
        cur_valid <= 1'b0;
        // A misaligned WB address cannot take a writeback (that is part of
        // what BAD_RING reports): raise the error vector directly instead.
        if (wb_aligned) begin
          wb_req <= 1'b1; wb_req_halt <= 1'b1;
        end else begin
          eirq <= 1'b1;
        end
      end

      // ---- channel reset: abandon, drain, then clear
      if (start_reset) begin
        rst_busy  <= 1'b1;
        run       <= 1'b0;
        cur_valid <= 1'b0;
        wb_req <= 1'b0; wb_req_irq <= 1'b0; wb_req_halt <= 1'b0;
        irq_cnt <= '0; eirq <= 1'b0; mod_pend <= '0; tmr_armed <= 1'b0;
      end
      if (rst_busy && drained && !out_holds) begin
        rst_busy <= 1'b0;
        state <= STATE_STOPPED; err <= ERR_NONE; err_index <= '0;
        head <= '0; tail <= '0; fetch_idx <= '0; load_idx <= '0; run <= 1'b0;
        bytes <= '0; bytes_hi_l <= '0; wb_count <= '0; blocked <= 1'b0; cur_valid <= 1'b0;
        wb_req <= 1'b0; wb_req_irq <= 1'b0; wb_req_halt <= 1'b0;
        irq_cnt <= '0; eirq <= 1'b0; mod_pend <= '0; tmr_armed <= 1'b0;
      end
    end
  end
endmodule
