// Test sequence for fdma_tb (included inside the module).
  localparam longint R0 = HBASE + 64'h1E_0000;   // rings live here
  localparam longint SRC = HBASE + 64'h00_0000;
  localparam longint DST = HBASE + 64'h10_0000;

  task automatic t_reset_values;
    logic [31:0] d, d2;
    expect_reg(REG_ID[16:0], ID_VALUE, "ID");
    expect_reg(REG_CAP0[16:0], 32'h1540_1004, "CAP0");
    expect_reg(REG_CAP1[16:0], 32'h981C_00FA, "CAP1");
    expect_reg(REG_CAP2[16:0], 32'h0010_051C, "CAP2");
    expect_reg(REG_GCTRL[16:0], 0, "GCTRL");
    expect_reg(REG_GSTATUS[16:0], 32'h4, "GSTATUS");
    expect_reg(REG_ERR_VEC[16:0], 4, "ERR_VEC");
    expect_reg(REG_SCRATCH[16:0], 0, "SCRATCH");
    expect_reg(REG_RD_OUTSTANDING[16:0], 0, "RD_OUTSTANDING");
    expect_reg(REG_FI_COUNT[16:0], 0, "FI_COUNT");
    for (int c = 0; c < 4; c++) begin
      expect_reg(chr(c, CHREG_IRQ_VEC), c, "IRQ_VEC");
      expect_reg(chr(c, CHREG_STATUS), 0, "STATUS");
      expect_reg(chr(c, CHREG_HEAD), 0, "HEAD");
    end
    rw(REG_SCRATCH[16:0], 32'hDEAD_BEEF);
    expect_reg(REG_SCRATCH[16:0], 32'hDEAD_BEEF, "SCRATCH rw");
    rw(REG_ID[16:0], 0);
    expect_reg(REG_ID[16:0], ID_VALUE, "ID is RO");
    expect_reg(17'h0040, 0, "unmapped global");
    expect_reg(chr(4, 0), 0, "channel 4 unmapped");
    rr(REG_CYCLE_LO[16:0], d); rr(REG_CYCLE_HI[16:0], d2);
    check(d != 0 && d2 == 0, "CYCLE_LO/HI");
    check(cycle_count > 64'(d), "cycle_count output runs");
    check(quiescent === 1'b1, "quiescent after reset");
  endtask

  task automatic t_copies;
    copy_test(DIR_H2C, SRC + 3, 64'h100 + 5, 1, "h2c 1B");
    copy_test(DIR_C2H, 64'h200 + 7, DST + 9, 1, "c2h 1B");
    copy_test(DIR_H2H, SRC + 1, DST + 30, 1, "h2h 1B");
    copy_test(DIR_H2C, SRC + 5, 64'h1000 + 17, 31, "h2c 31B");
    copy_test(DIR_C2H, 64'h3000 + 31, DST + 2, 31, "c2h 31B");
    copy_test(DIR_H2H, SRC + 30, DST + 1, 33, "h2h 33B");
    copy_test(DIR_H2C, SRC + 17, 64'h5000 + 3, 33, "h2c 33B");
    copy_test(DIR_C2H, 64'h6000 + 1, DST + 31, 33, "c2h 33B");
    copy_test(DIR_H2H, SRC + 4093, DST + 4090, 4097, "h2h 4097B across 4K");
    copy_test(DIR_H2C, SRC + 4000, 64'h8000 + 4095, 4097, "h2c 4097B across 4K");
    copy_test(DIR_C2H, 64'h9FFF, DST + 4092, 4097, "c2h 4097B across 4K");
    copy_test(DIR_H2H, SRC + 64, DST + 64, 4096, "h2h aligned 4K");
    copy_test(DIR_H2H, SRC + 13, DST + 7, 100 * 1024 + 3, "h2h 100K");
    copy_test(DIR_H2C, SRC + 29, 64'h2_0000 + 11, 150 * 1024 + 5, "h2c 150K");
    copy_test(DIR_C2H, 64'h4_0000 + 2, DST + 19, 120 * 1024 + 1, "c2h 120K");
    check(max_out > 1, $sformatf("reads pipelined: max outstanding %0d", max_out));
  endtask

  task automatic t_rd_max;
    logic [31:0] d;
    rr(REG_RD_OUTSTANDING_MAX[16:0], d);
    check(d > 1 && d <= 16, $sformatf("RD_OUTSTANDING_MAX = %0d", d));
    rw(REG_RD_OUTSTANDING_MAX[16:0], 0);
    expect_reg(REG_RD_OUTSTANDING_MAX[16:0], 0, "RD_OUTSTANDING_MAX cleared");
  endtask

  // multi-descriptor job, ring wrap (ring of 4), interrupt per job
  task automatic t_jobs_wrap;
    integer i0, w0;
    logic [31:0] d;
    i0 = irq_cnt[0]; w0 = wb_seen[0];
    fill(0, SRC, 8192, 5); clear(0, DST - 1, 8194);
    for (int j = 0; j < 3; j++) begin
      for (int k = 0; k < 3; k++) push(0, DIR_H2H, SRC + j * 2700 + k * 900, DST + j * 2700 + k * 900, 900, k == 2, k == 2);
      doorbell(0);
      wait_head(0, tail[0], 20000, "job");
    end
    wait_quiet(5000);
    compare(0, SRC, 0, DST, 8100, "3 jobs over a wrapping ring");
    check(wb_seen[0] == w0 + 3, "one writeback per job");
    check(irq_cnt[0] == i0 + 3, $sformatf("one irq per job (%0d)", irq_cnt[0] - i0));
    check(get32(wb_at[0] + WB_OFF_STATUS) == 32'(STATE_RUNNING), "wb status running");
    d = get32(wb_at[0] + WB_OFF_COUNT);
    check(d == 32'(wb_seen[0]), $sformatf("wb count %0d", d));
    // doorbell filling the ring exactly (TAIL - HEAD == RING_SIZE) is legal
    for (int k = 0; k < 4; k++) push(0, DIR_H2H, SRC + k, DST + k * 64, 1, 0, k == 3);
    doorbell(0);
    wait_head(0, tail[0], 5000, "full ring");
  endtask

  task automatic expect_halt(input int ch, input logic [7:0] code, input logic [31:0] idx, input string what);
    expect_halt2(ch, code, idx, what, 1);
  endtask
  task automatic expect_halt2(input int ch, input logic [7:0] code, input logic [31:0] idx, input string what,
                              input bit rerun);
    logic [31:0] st;
    integer e0;
    e0 = irq_cnt[4];
    wait_state(ch, STATE_HALTED, 20000, st);
    check(st == {16'd0, code, 8'(STATE_HALTED)}, $sformatf("%s: STATUS=%h", what, st));
    expect_reg(chr(ch, CHREG_ERR_INDEX), idx, {what, ": ERR_INDEX"});
    expect_reg(chr(ch, CHREG_HEAD), idx, {what, ": HEAD"});
    wait_quiet(5000);
    check(irq_cnt[4] == e0 + 1 || irq_cnt[4] == e0, {what, ": err irq"});
    check(get32(wb_at[ch] + WB_OFF_STATUS) == {16'd0, code, 8'(STATE_HALTED)}, {what, ": wb status"});
    check(get32(wb_at[ch] + WB_OFF_ERR_INDEX) == idx, {what, ": wb err_index"});
    expect_reg(REG_GSTATUS[16:0], 32'h0001_0005 << ch & 32'hFFFF_0000 | 32'h5, {what, ": GSTATUS"});
    ch_reset(ch);
    if (rerun) rw(chr(ch, CHREG_CTRL), 1);
  endtask

  task automatic t_errors;
    integer e0;
    e0 = irq_cnt[4];
    ch_reset(0); rw(chr(0, CHREG_CTRL), 1);
    push(0, DIR_H2H, SRC, DST, 16, 0, 1);
    push_raw(0, SRC, DST, 16, 32'(DIR_H2H), 32'h1234_5678); doorbell(0);
    expect_halt(0, ERR_DESC_RSVD, 1, "bad magic");
    push_raw(0, SRC, DST, 16, 32'h100, DESC_MAGIC); doorbell(0);
    expect_halt(0, ERR_DESC_RSVD, 0, "reserved flag");
    push_raw(0, SRC, DST, 16, 32'h3, DESC_MAGIC); doorbell(0);
    expect_halt(0, ERR_DESC_DIR, 0, "dir 3");
    push(0, DIR_H2H, SRC, DST, 0, 0, 1); doorbell(0);
    expect_halt(0, ERR_DESC_LEN, 0, "len 0");
    push(0, DIR_H2H, SRC, DST, 32'h1000_0001, 0, 1); doorbell(0);
    expect_halt(0, ERR_DESC_LEN, 0, "len too big");
    push(0, DIR_H2C, SRC, 64'h0FFF_FFFF, 2, 0, 1); doorbell(0);
    expect_halt(0, ERR_CARD_RANGE, 0, "card range");
    push(0, DIR_C2H, 64'hFFFF_FFFF_FFFF_FFFF, DST, 2, 0, 1); doorbell(0);
    expect_halt(0, ERR_CARD_RANGE, 0, "card range overflow");
    push(0, DIR_H2H, SRC, DST, 64, 0, 1);
    push(0, DIR_H2H, HBASE + HSIZE - 100, DST, 5000, 0, 1);
    push(0, DIR_H2H, SRC, DST, 64, 0, 1); doorbell(0);
    expect_halt(0, ERR_READ_FAULT, 1, "read fault");
    // fetch fault: a ring outside host memory
    ring_base[0] = HBASE + HSIZE + 4096;
    rw(chr(0, CHREG_RING_LO), ring_base[0][31:0]); rw(chr(0, CHREG_RING_HI), ring_base[0][63:32]);
    tail[0] = 1; doorbell(0);
    expect_halt(0, ERR_FETCH_FAULT, 0, "fetch fault");
    ring_base[0] = R0;
    rw(chr(0, CHREG_RING_LO), R0[31:0]); rw(chr(0, CHREG_RING_HI), R0[63:32]);
    // bad doorbell
    tail[0] = 9; doorbell(0);
    expect_halt(0, ERR_BAD_DOORBELL, 0, "bad doorbell");
    // injected descriptor error
    push(0, DIR_H2H, SRC, DST, 64, 0, 1); doorbell(0); wait_head(0, 1, 5000, "before inject");
    rw(REG_FI_ONESHOT[16:0], 32'h0000_0008);
    push(0, DIR_H2H, SRC, DST, 64, 0, 1); doorbell(0);
    expect_halt(0, ERR_INJECTED, 1, "injected");
    expect_reg(REG_FI_ONESHOT[16:0], 0, "DESC_ERR self-clears");
    // bad ring: size 3
    rw(chr(0, CHREG_CTRL), 0);
    rw(chr(0, CHREG_RING_SIZE), 3); rw(chr(0, CHREG_CTRL), 1);
    expect_halt2(0, ERR_BAD_RING, 0, "bad ring", 0);
    rw(chr(0, CHREG_RING_SIZE), 8); rw(chr(0, CHREG_CTRL), 1);
    check(irq_cnt[4] == e0 + 12, $sformatf("error vector raised per halt (%0d)", irq_cnt[4] - e0));
    // still working afterwards
    copy_test(DIR_H2H, SRC + 3, DST + 5, 777, "after errors");
  endtask

  task automatic t_moderation;
    integer i0, t0;
    rw(chr(0, CHREG_IRQ_COUNT), 4); rw(chr(0, CHREG_IRQ_TIMER), 3000);
    i0 = irq_cnt[0];
    push(0, DIR_H2H, SRC, DST, 64, 1, 1); push(0, DIR_H2H, SRC, DST, 64, 1, 1); doorbell(0);
    wait_head(0, tail[0], 5000, "moderation");
    t0 = cyc;
    repeat (500) @(posedge clk);
    check(irq_cnt[0] == i0, "no irq below threshold before timer");
    check(!quiescent, "armed timer is not quiescent");
    while (irq_cnt[0] == i0 && cyc < t0 + 5000) @(posedge clk);
    check(irq_cnt[0] == i0 + 1, "timer fires one irq");
    wait_quiet(1000);
    check(quiescent, "quiescent after timer");
    // threshold reached: 4 irq descriptors, one interrupt
    rw(chr(0, CHREG_IRQ_TIMER), 0);
    i0 = irq_cnt[0];
    for (int k = 0; k < 4; k++) push(0, DIR_H2H, SRC, DST, 64, 1, 0);
    doorbell(0); wait_head(0, tail[0], 5000, "threshold"); wait_quiet(2000);
    check(irq_cnt[0] == i0 + 1, $sformatf("threshold 4 -> one irq (%0d)", irq_cnt[0] - i0));
    rw(chr(0, CHREG_IRQ_COUNT), 0);
  endtask

  task automatic t_faults;
    integer i0; logic [31:0] d;
    i0 = irq_cnt[0];
    rw(REG_FI_ONESHOT[16:0], 32'h1);      // drop
    push(0, DIR_H2H, SRC, DST, 64, 1, 1); doorbell(0); wait_head(0, tail[0], 5000, "drop"); wait_quiet(2000);
    check(irq_cnt[0] == i0, "DROP_IRQ drops");
    rw(REG_FI_ONESHOT[16:0], 32'h2);      // dup
    push(0, DIR_H2H, SRC, DST, 64, 1, 1); doorbell(0); wait_head(0, tail[0], 5000, "dup"); wait_quiet(2000);
    check(irq_cnt[0] == i0 + 2, "DUP_IRQ duplicates");
    rw(REG_FI_ONESHOT[16:0], 32'h4);      // corrupt wb
    push(0, DIR_H2H, SRC, DST, 64, 0, 1); doorbell(0); wait_head(0, tail[0], 5000, "corrupt"); wait_quiet(2000);
    check(get32(wb_at[0] + WB_OFF_HEAD) == ~32'(tail[0]), "CORRUPT_WB inverts head");
    push(0, DIR_H2H, SRC, DST, 64, 0, 1); doorbell(0); wait_head(0, tail[0], 5000, "after corrupt"); wait_quiet(2000);
    check(get32(wb_at[0] + WB_OFF_HEAD) == 32'(tail[0]), "next wb is clean");
    rr(REG_FI_COUNT[16:0], d);
    check(d == 4, $sformatf("FI_COUNT = %0d", d));
    // stall: queued work makes no progress and the engine is not quiescent
    rw(REG_FI_STALL[16:0], 1);
    push(0, DIR_H2H, SRC, DST, 64, 0, 1); doorbell(0);
    repeat (300) @(posedge clk);
    expect_reg(chr(0, CHREG_HEAD), tail[0] - 1, "stalled channel holds");
    check(!quiescent, "stalled channel with work is not quiescent");
    rw(REG_FI_STALL[16:0], 0);
    wait_head(0, tail[0], 5000, "unstalled"); wait_quiet(2000);
    check(quiescent, "quiescent after unstall");
  endtask

  task automatic t_two_channels;
    logic [31:0] h1;
    setup(1, R0 + 4096, 16);
    fill(0, SRC, 300 * 1024, 9); clear(0, DST - 1, 300 * 1024 + 2);
    push(0, DIR_H2H, SRC, DST, 256 * 1024, 0, 1); doorbell(0);
    repeat (200) @(posedge clk);
    for (int k = 0; k < 4; k++) push(1, DIR_H2H, SRC + 256 * 1024 + k * 1000, DST + 256 * 1024 + k * 1000, 1000, 0, 1);
    doorbell(1);
    wait_head(1, 4, 40000, "ch1 small jobs");
    rr(chr(0, CHREG_HEAD), h1);
    check(h1 == tail[0] - 1, "ch1 finished while ch0's 256K descriptor still runs (round-robin)");
    wait_head(0, tail[0], 400000, "ch0 big");
    wait_quiet(5000);
    compare(0, SRC, 0, DST, 256 * 1024 + 4000, "two channels interleaved");
    rr(chr(0, CHREG_BYTES_LO), h1);
    check(h1 != 0, "BYTES counts");
  endtask

  task automatic t_stop_resume;
    logic [31:0] st;
    push(0, DIR_H2H, SRC, DST, 64, 0, 1);
    rw(chr(0, CHREG_CTRL), 0);
    wait_state(0, STATE_STOPPED, 5000, st);
    check(st == 0, "RUN=0 -> STOPPED");
    doorbell(0);
    repeat (200) @(posedge clk);
    expect_reg(chr(0, CHREG_HEAD), tail[0] - 1, "stopped channel does nothing");
    rw(chr(0, CHREG_CTRL), 1);
    wait_head(0, tail[0], 5000, "resume at HEAD");
    // channel reset while a big transfer is in flight
    push(0, DIR_H2H, SRC, DST, 200 * 1024, 0, 1); doorbell(0);
    repeat (300) @(posedge clk);
    ch_reset(0);
    wait_quiet(5000);
    check(quiescent, "quiescent after channel reset");
    expect_reg(chr(0, CHREG_BYTES_LO), 0, "reset clears BYTES");
    expect_reg(chr(0, CHREG_RING_SIZE), ring_sz[0], "reset keeps config");
    rw(chr(0, CHREG_CTRL), 1);
    copy_test(DIR_H2H, SRC + 1, DST + 2, 100, "after channel reset");
  endtask

  task automatic t_soft_reset;
    logic [31:0] d;
    longint c0;
    c0 = cycle_count;
    rw(REG_GCTRL[16:0], 1);
    push(0, DIR_H2H, SRC, DST, 100 * 1024, 0, 1); doorbell(0);
    repeat (200) @(posedge clk);
    rw(REG_GCTRL[16:0], 3);
    rr(REG_GSTATUS[16:0], d);
    repeat (2000) @(posedge clk);
    expect_reg(REG_GSTATUS[16:0], 32'h4, "soft reset done: GSTATUS");
    expect_reg(REG_GCTRL[16:0], 0, "soft reset clears ENABLE");
    expect_reg(chr(0, CHREG_RING_SIZE), 0, "soft reset clears channel config");
    expect_reg(chr(0, CHREG_HEAD), 0, "soft reset clears HEAD");
    expect_reg(REG_SCRATCH[16:0], 0, "soft reset clears SCRATCH");
    rr(REG_CYCLE_LO[16:0], d); rr(REG_CYCLE_HI[16:0], d);
    check(cycle_count > c0 + 2000, "cycle counter survives soft reset");
    check(64'(d) == cycle_count >> 32, "CYCLE_HI latched");
    check(quiescent, "quiescent after soft reset");
  endtask

  initial begin
    for (int i = 0; i < 16; i++) irq_cnt[i] = 0;
    for (int i = 0; i < 4; i++) wb_seen[i] = 0;
    for (int i = 0; i < 2; i++) begin rq_h[i] = 0; rq_t_[i] = 0; rq_k[i] = 0; w_open[i] = 0; end
    repeat (5) @(posedge clk);
    rst_n <= 1;
    repeat (5) @(posedge clk);
    t_reset_values();
    rw(REG_GCTRL[16:0], 1);
    setup(0, R0, 8);
    t_copies();
    t_rd_max();
    t_jobs_wrap();
    t_errors();
    t_moderation();
    t_faults();
    t_two_channels();
    t_stop_resume();
    t_soft_reset();
    check(proto_err == 0, $sformatf("port protocol violations: %0d", proto_err));
    check(dropped_writes == 0, $sformatf("writes outside host memory: %0d", dropped_writes));
    $display("%0d passed, %0d failed", passed, failed);
    if (failed != 0) $fatal(1, "testbench failures");
    $finish;
  end

  initial begin
    #400_000_000;
    $display("TIMEOUT");
    $display("%0d passed, %0d failed", passed, failed + 1);
    $fatal(1, "timeout");
  end
