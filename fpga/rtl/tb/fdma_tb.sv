// Self-checking testbench for fdma_top (Icarus). Behavioural host and card
// memories follow fpga/rtl/PORTS.md: in-order completions after LAT cycles,
// random ready/valid stalls, read errors outside host memory, posted writes
// checked for the request rules (<= 2^MAX_PAYLOAD bytes, no 4 KiB crossing,
// consecutive aligned beats, contiguous strobes).
`timescale 1ns/1ps
module fdma_tb;
  import fdma_hw_pkg::*;
  localparam int DB = 32, DW = 256;
  localparam longint HBASE = 64'h0000_0001_0000_0000;
  localparam int HSIZE = 2*1024*1024;
  localparam int CSIZE = 1024*1024;
  localparam int LAT = 40;

  logic clk = 0, rst_n = 0;
  always #5 clk = ~clk;

  logic reg_req_valid = 0, reg_req_write = 0; logic [16:0] reg_req_addr = 0; logic [31:0] reg_req_wdata = 0;
  logic reg_rsp_valid; logic [31:0] reg_rsp_rdata;
  logic hr_req_valid, hr_req_ready = 0; logic [63:0] hr_req_addr; logic [12:0] hr_req_len;
  logic hr_rsp_valid = 0, hr_rsp_ready, hr_rsp_last = 0, hr_rsp_err = 0; logic [DW-1:0] hr_rsp_data = 0;
  logic hw_valid, hw_ready = 0, hw_last; logic [63:0] hw_addr; logic [DW-1:0] hw_data; logic [DB-1:0] hw_strb;
  logic cr_req_valid, cr_req_ready = 0; logic [63:0] cr_req_addr; logic [12:0] cr_req_len;
  logic cr_rsp_valid = 0, cr_rsp_ready, cr_rsp_last = 0, cr_rsp_err = 0; logic [DW-1:0] cr_rsp_data = 0;
  logic cw_valid, cw_ready = 0, cw_last; logic [63:0] cw_addr; logic [DW-1:0] cw_data; logic [DB-1:0] cw_strb;
  logic irq_valid, irq_ready = 0; logic [7:0] irq_vector;
  logic quiescent; logic [63:0] cycle_count;

  fdma_top dut (.*);

  // ------------------------------------------------------------ memories
  reg [7:0] hmem [0:HSIZE-1];
  reg [7:0] cmem [0:CSIZE-1];
  integer passed = 0, failed = 0;
  integer stall_pct = 25;     // % of cycles a ready/valid is withheld
  integer cyc = 0;
  always @(posedge clk) cyc <= cyc + 1;

  task automatic check(input bit ok, input string what);
    if (ok) passed++;
    else begin failed++; $display("FAIL @%0d: %s", cyc, what); end
  endtask

  function automatic bit stall(); return ($urandom % 100) < stall_pct; endfunction

  // ------------------------------------------------------------ read ports
  // port 0 = host, 1 = card
  longint rq_addr [2][0:63]; integer rq_len [2][0:63]; integer rq_t [2][0:63];
  integer rq_h [2], rq_t_ [2], rq_k [2];
  integer proto_err = 0, max_out = 0;

  function automatic bit host_ok(longint a, integer n);
    return a >= HBASE && a + n <= HBASE + HSIZE;
  endfunction

  task automatic rd_port(input int p, input bit req_v, input logic [63:0] req_a, input logic [12:0] req_l,
                         input bit rsp_v, input bit rsp_r, output bit o_req_r, output bit o_rsp_v,
                         output logic [DW-1:0] o_data, output bit o_last, output bit o_err, input bit hold_v,
                         input logic [DW-1:0] hold_d, input bit hold_l, input bit hold_e);
    integer i, nb; longint base, wa; bit err;
    if (req_v && (p == 0 ? hr_req_ready : cr_req_ready)) begin
      if (req_l == 0 || req_l > 512 || ((req_a & 4095) + req_l) > 4096) begin
        proto_err++; $display("PROTO read req addr=%h len=%0d", req_a, req_l);
      end
      rq_addr[p][rq_t_[p] % 64] = req_a; rq_len[p][rq_t_[p] % 64] = req_l; rq_t[p][rq_t_[p] % 64] = cyc;
      rq_t_[p]++;
      if (rq_t_[p] - rq_h[p] > 16) begin proto_err++; $display("PROTO more than MAX_READS outstanding"); end
    end
    o_req_r = !stall();
    if (rsp_v && rsp_r) begin
      if (hold_l) begin rq_h[p]++; rq_k[p] = 0; end else rq_k[p]++;
    end
    if (rsp_v && !rsp_r) begin
      o_rsp_v = 1; o_data = hold_d; o_last = hold_l; o_err = hold_e;
    end else if (rq_h[p] != rq_t_[p] && cyc >= rq_t[p][rq_h[p] % 64] + LAT && !stall()) begin
      base = rq_addr[p][rq_h[p] % 64]; nb = ((base % DB) + rq_len[p][rq_h[p] % 64] + DB - 1) / DB;
      err = (p == 0) ? !host_ok(base, rq_len[p][rq_h[p] % 64]) : (base + rq_len[p][rq_h[p] % 64] > CSIZE);
      wa = (base & ~64'(DB - 1)) + rq_k[p] * DB;
      for (i = 0; i < DB; i++) begin
        if (err) o_data[i*8 +: 8] = 0;
        else if (p == 0) o_data[i*8 +: 8] = host_ok(wa + i, 1) ? hmem[wa + i - HBASE] : 8'h00;
        else o_data[i*8 +: 8] = (wa + i < CSIZE) ? cmem[wa + i] : 8'h00;
      end
      o_rsp_v = 1; o_last = (rq_k[p] == nb - 1); o_err = err;
    end else begin
      o_rsp_v = 0; o_data = 0; o_last = 0; o_err = 0;
    end
  endtask

  always @(posedge clk) begin
    bit rr, rv, rl, re; logic [DW-1:0] rd;
    if (rst_n) begin
      rd_port(0, hr_req_valid, hr_req_addr, hr_req_len, hr_rsp_valid, hr_rsp_ready, rr, rv, rd, rl, re,
              hr_rsp_valid, hr_rsp_data, hr_rsp_last, hr_rsp_err);
      hr_req_ready <= rr; hr_rsp_valid <= rv; hr_rsp_data <= rd; hr_rsp_last <= rl; hr_rsp_err <= re;
      rd_port(1, cr_req_valid, cr_req_addr, cr_req_len, cr_rsp_valid, cr_rsp_ready, rr, rv, rd, rl, re,
              cr_rsp_valid, cr_rsp_data, cr_rsp_last, cr_rsp_err);
      cr_req_ready <= rr; cr_rsp_valid <= rv; cr_rsp_data <= rd; cr_rsp_last <= rl; cr_rsp_err <= re;
    end
  end

  // ------------------------------------------------------------ write ports
  bit w_open [2]; longint w_next [2]; longint w_page [2]; integer w_bytes [2]; bit w_end_full [2];
  integer wb_seen [4];
  longint wb_at [4];
  integer irq_cnt [0:15];
  integer irq_total = 0;
  integer dropped_writes = 0;

  task automatic wr_beat(input int p, input logic [63:0] a, input logic [DW-1:0] d, input logic [DB-1:0] s,
                         input bit last);
    integer i, lo, hi, n; bit seen_gap;
    lo = -1; hi = -1; seen_gap = 0;
    for (i = 0; i < DB; i++) if (s[i]) begin
      if (lo < 0) lo = i; else if (hi != i - 1) seen_gap = 1;
      hi = i;
    end
    n = (lo < 0) ? 0 : hi - lo + 1;
    if (a % DB != 0 || seen_gap || n == 0) begin proto_err++; $display("PROTO write beat a=%h strb=%h", a, s); end
    if (w_open[p]) begin
      if (a != w_next[p] || !w_end_full[p] || lo != 0 || (a >> 12) != w_page[p]) begin
        proto_err++; $display("PROTO write continuation a=%h", a);
      end
    end else begin
      w_bytes[p] = 0; w_page[p] = a >> 12;
    end
    w_bytes[p] += n; w_next[p] = a + DB; w_end_full[p] = (hi == DB - 1);
    if (w_bytes[p] > 256) begin proto_err++; $display("PROTO write request > 256 bytes"); end
    w_open[p] = !last;
    for (i = 0; i < DB; i++) if (s[i]) begin
      if (p == 0) begin
        if (host_ok(a + i, 1)) hmem[a + i - HBASE] = d[i*8 +: 8]; else dropped_writes++;
      end else begin
        if (a + i < CSIZE) cmem[a + i] = d[i*8 +: 8]; else proto_err++;
      end
    end
    if (p == 0) for (i = 0; i < 4; i++) if (lo >= 0 && wb_at[i] == a + lo && n == 16) wb_seen[i]++;
  endtask

  always @(posedge clk) begin
    if (rst_n) begin
      if (hw_valid && hw_ready) wr_beat(0, hw_addr, hw_data, hw_strb, hw_last);
      if (cw_valid && cw_ready) wr_beat(1, cw_addr, cw_data, cw_strb, cw_last);
      if (irq_valid && irq_ready) begin irq_cnt[irq_vector] = irq_cnt[irq_vector] + 1; irq_total++; end
      hw_ready <= !stall(); cw_ready <= !stall(); irq_ready <= !stall();
      if (dut.u_issue.hr_out > max_out) max_out = dut.u_issue.hr_out;
    end
  end

  // ------------------------------------------------------------ register access
  task automatic rw(input logic [16:0] a, input logic [31:0] d);
    @(posedge clk); reg_req_valid <= 1; reg_req_write <= 1; reg_req_addr <= a; reg_req_wdata <= d;
    @(posedge clk); reg_req_valid <= 0; reg_req_write <= 0;
    #1 if (!reg_rsp_valid) begin failed++; $display("FAIL: no write response"); end
  endtask
  task automatic rr(input logic [16:0] a, output logic [31:0] d);
    @(posedge clk); reg_req_valid <= 1; reg_req_write <= 0; reg_req_addr <= a;
    @(posedge clk); reg_req_valid <= 0;
    #1 if (!reg_rsp_valid) begin failed++; $display("FAIL: no read response"); end
    d = reg_rsp_rdata;
  endtask
  function automatic logic [16:0] chr(input int ch, input logic [31:0] off);
    return 17'(CHANNEL_BASE + ch * CHANNEL_STRIDE + off);
  endfunction
  task automatic expect_reg(input logic [16:0] a, input logic [31:0] v, input string what);
    logic [31:0] d;
    rr(a, d);
    check(d === v, $sformatf("%s: reg %h = %h, expected %h", what, a, d, v));
  endtask

  // ------------------------------------------------------------ rings
  longint ring_base [4]; integer ring_sz [4]; integer tail [4];
  task automatic put32(input longint a, input logic [31:0] v);
    for (int i = 0; i < 4; i++) hmem[a - HBASE + i] = v[i*8 +: 8];
  endtask
  task automatic put64(input longint a, input logic [63:0] v);
    for (int i = 0; i < 8; i++) hmem[a - HBASE + i] = v[i*8 +: 8];
  endtask
  function automatic logic [31:0] get32(input longint a);
    return {hmem[a - HBASE + 3], hmem[a - HBASE + 2], hmem[a - HBASE + 1], hmem[a - HBASE]};
  endfunction

  task automatic push_raw(input int ch, input longint src, input longint dst, input logic [31:0] len,
                          input logic [31:0] flags, input logic [31:0] magic);
    longint a;
    a = ring_base[ch] + (tail[ch] % ring_sz[ch]) * 32;
    put64(a + DESC_OFF_SRC, src); put64(a + DESC_OFF_DST, dst); put32(a + DESC_OFF_LEN, len);
    put32(a + DESC_OFF_FLAGS, flags); put32(a + DESC_OFF_TAG, 32'h7a9); put32(a + DESC_OFF_MAGIC, magic);
    tail[ch]++;
  endtask
  task automatic push(input int ch, input logic [1:0] dir, input longint src, input longint dst,
                      input logic [31:0] len, input bit irq, input bit eoj);
    push_raw(ch, src, dst, len, 32'(dir) | (irq ? FLAG_IRQ : 0) | (eoj ? FLAG_EOJ : 0), DESC_MAGIC);
  endtask
  task automatic doorbell(input int ch);
    rw(chr(ch, CHREG_TAIL), tail[ch]);
  endtask
  task automatic setup(input int ch, input longint base, input int size);
    ring_base[ch] = base; ring_sz[ch] = size; tail[ch] = 0; wb_at[ch] = HBASE + 64'h1F_F000 + ch * 64;
    rw(chr(ch, CHREG_RING_LO), base[31:0]); rw(chr(ch, CHREG_RING_HI), base[63:32]);
    rw(chr(ch, CHREG_RING_SIZE), size);
    rw(chr(ch, CHREG_WB_LO), wb_at[ch][31:0]); rw(chr(ch, CHREG_WB_HI), wb_at[ch][63:32]);
    rw(chr(ch, CHREG_CTRL), 1);
  endtask
  task automatic wait_head(input int ch, input int idx, input int tmo, input string what);
    logic [31:0] d; integer t;
    t = 0; d = 0;
    rr(chr(ch, CHREG_HEAD), d);
    while (t < tmo && d != idx) begin
      repeat (20) @(posedge clk); t += 22;
      rr(chr(ch, CHREG_HEAD), d);
    end
    check(d == idx, $sformatf("%s: ch%0d HEAD=%0d expected %0d", what, ch, d, idx));
  endtask
  task automatic wait_state(input int ch, input logic [1:0] st, input int tmo, output logic [31:0] status);
    integer t; t = 0;
    rr(chr(ch, CHREG_STATUS), status);
    while (t < tmo && status[1:0] != st) begin
      repeat (20) @(posedge clk); t += 22; rr(chr(ch, CHREG_STATUS), status);
    end
  endtask
  task automatic wait_quiet(input int tmo);
    integer t; t = 0;
    while (!quiescent && t < tmo) begin @(posedge clk); t++; end
    repeat (3) @(posedge clk);
    while (!quiescent && t < tmo) begin @(posedge clk); t++; end
  endtask
  task automatic ch_reset(input int ch);
    logic [31:0] st;
    rw(chr(ch, CHREG_CTRL), 2);
    wait_state(ch, STATE_STOPPED, 20000, st);
    check(st == 0, $sformatf("ch%0d reset: STATUS=%h", ch, st));
    expect_reg(chr(ch, CHREG_HEAD), 0, "reset HEAD");
    expect_reg(chr(ch, CHREG_TAIL), 0, "reset TAIL");
    expect_reg(chr(ch, CHREG_CTRL), 0, "reset CTRL");
    tail[ch] = 0;
  endtask
  task automatic fill(input int p, input longint a, input int n, input int seed);
    for (int i = 0; i < n; i++) begin
      if (p == 0) hmem[a - HBASE + i] = 8'((i * 7 + seed * 13 + (i >> 8)) ^ seed);
      else cmem[a + i] = 8'((i * 7 + seed * 13 + (i >> 8)) ^ seed);
    end
  endtask
  function automatic logic [7:0] mb(input int p, input longint a);
    return p == 0 ? hmem[a - HBASE] : cmem[a];
  endfunction
  task automatic clear(input int p, input longint a, input int n);
    for (int i = 0; i < n; i++) if (p == 0) hmem[a - HBASE + i] = 8'hEE; else cmem[a + i] = 8'hEE;
  endtask
  task automatic compare(input int sp, input longint s, input int dp, input longint d, input int n,
                         input string what);
    integer bad; bad = 0;
    for (int i = 0; i < n; i++) if (mb(sp, s + i) !== mb(dp, d + i)) bad++;
    if (mb(dp, d - 1) !== 8'hEE || mb(dp, d + n) !== 8'hEE) bad++;
    check(bad == 0, $sformatf("%s: %0d bad bytes", what, bad));
  endtask

  // one copy on channel 0 in direction dir, verified
  task automatic copy_test(input logic [1:0] dir, input longint s, input longint d, input int n, input string what);
    int sp, dp; integer w0;
    sp = (dir == DIR_C2H) ? 1 : 0; dp = (dir == DIR_H2C) ? 1 : 0;
    fill(sp, s, n, n & 255); clear(dp, d - 1, n + 2);
    w0 = wb_seen[0];
    push(0, dir, s, d, n, 0, 1); doorbell(0);
    wait_head(0, tail[0], 40 * n + 4000, what);
    wait_quiet(2000);
    compare(sp, s, dp, d, n, what);
    check(wb_seen[0] == w0 + 1, {what, ": one writeback"});
    check(get32(wb_at[0] + WB_OFF_HEAD) == tail[0], {what, ": writeback head"});
  endtask

  `include "fdma_tb_tests.svh"
endmodule
