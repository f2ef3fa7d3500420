// fdma_realign - the data mover: turns the read-data words of one chunk
// (aligned to the source address) into write beats aligned to the destination
// address, cut into write requests.
//
// A chunk moves n bytes from src to dst. Its source words arrive as one
// contiguous run of aligned words w_0..w_{Nin-1} (the issue unit splits reads
// only at DB-aligned addresses, so consecutive reads of a chunk abut), with
// Nin = ceil((src%DB + n)/DB). The destination needs Nout = ceil((dst%DB + n)/DB)
// aligned words. With the window W_i = {w_i, w_{i-1}} (2*DB bytes), output word
// k is DB bytes of W_{k+lag} starting at byte o, where
//   lag = (src%DB > dst%DB),   o = lag ? src%DB - dst%DB : DB - (dst%DB - src%DB).
// So each consumed input word yields at most one output word, and at most one
// extra "flush" word (window {0, w_last}) ends the chunk. One byte-granular
// barrel shift of 2*DW bits, one beat per cycle, no extra buffering.
//
// Write requests end where the next destination word is 2^MAX_PAYLOAD_LOG2
// aligned (which also covers every 4 KiB boundary) or at the chunk's last word;
// only the first and last word of a chunk are partial, so strobes are
// contiguous within every request.
//
// Errors and discards, always at write-request boundaries so the host never
// sees a truncated request:
//   * chunk of a killed channel (halted, resetting, soft reset): input words
//     are consumed and dropped;
//   * a read word with err: the channel halts with ERR_READ_FAULT at the
//     chunk's descriptor index, once the output stage is idle (so HEAD is
//     final); the rest of the chunk is then dropped as a killed channel's.
//     If the error hits inside an open write request, that request is
//     finished first (its remaining bytes are the zeros the faulted read
//     returned); it never completes a descriptor.
//   * error marker chunk (invalid descriptor): halts once the output stage is
//     idle, in order behind the channel's earlier chunks.
module fdma_realign import fdma_hw_pkg::*; #(
    parameter int DATA_BYTES_LOG2  = DEF_DATA_BYTES_LOG2,
    parameter int MAX_PAYLOAD_LOG2 = DEF_MAX_PAYLOAD_LOG2
) (
    input  logic                                clk,
    input  logic                                rst,
    // chunk at the head of the chunk queue
    input  logic                                c_valid,
    input  logic                                c_pseudo,
    input  logic [7:0]                          c_err,
    input  logic [DATA_BYTES_LOG2-1:0]          c_soff,
    input  logic [63:0]                         c_dst,
    input  logic [12:0]                         c_n,
    input  logic                                c_lastdesc,
    input  logic [31:0]                         c_idx,
    input  logic                                c_killed,
    output logic                                c_pop,
    // read data of the chunk's source port
    input  logic                                in_valid,
    input  logic [(8<<DATA_BYTES_LOG2)-1:0]     in_data,
    input  logic                                in_err,
    output logic                                in_pop,
    // output stage
    input  logic                                out_ok,    // a beat may be loaded this cycle
    input  logic                                out_idle,  // output stage empty, no writeback pending
    output logic                                o_load,
    output logic [63:0]                         o_addr,
    output logic [(8<<DATA_BYTES_LOG2)-1:0]     o_data,
    output logic [(1<<DATA_BYTES_LOG2)-1:0]     o_strb,
    output logic                                o_last,
    output logic                                o_complete,
    output logic [DATA_BYTES_LOG2:0]            o_nbytes,
    output logic                                req_open,
    // halt request for the chunk's channel
    output logic                                halt_ev,
    output logic [7:0]                          halt_code,
    output logic [31:0]                         halt_idx
);
  localparam int DBL = DATA_BYTES_LOG2;
  localparam int DB  = 1 << DBL;
  localparam int DW  = 8 * DB;
  localparam int CW  = 14;

  logic [CW-1:0] in_cnt, out_cnt;
  logic [DW-1:0] prev;
  logic          fault_seen;

  logic [DBL-1:0] d_off, last_lane;
  logic [CW-1:0]  n_in, n_out;
  logic           lag;
  logic [DBL:0]   o;
  always_comb begin
    d_off     = c_dst[DBL-1:0];
    n_in      = (CW'(c_soff) + CW'(c_n) + CW'(DB - 1)) >> DBL;
    n_out     = (CW'(d_off)  + CW'(c_n) + CW'(DB - 1)) >> DBL;
    lag       = (c_soff > d_off);
    o         = lag ? {1'b0, c_soff - d_off} : (DBL+1)'(DB) - {1'b0, d_off - c_soff};
    last_lane = DBL'(CW'(d_off) + CW'(c_n) - CW'(1));
  end

  logic in_done, out_done, first_out, last_out, produce, need_halt;
  assign in_done   = (in_cnt == n_in);
  assign out_done  = (out_cnt == n_out);
  assign first_out = (out_cnt == '0);
  assign last_out  = (out_cnt == n_out - CW'(1));
  // Consuming input word i yields output word i - lag (none for i = 0 when lagging).
  assign produce   = !(lag && (in_cnt == '0));
  assign need_halt = !c_killed && !req_open && (fault_seen || (!in_done && in_valid && in_err));

  // Output word formation (valid whenever o_load is asserted).
  logic [2*DW-1:0] window;
  logic [DBL-1:0]  lo_lane, hi_lane;
  always_comb begin
    window   = {(in_done ? {DW{1'b0}} : in_data), prev};
    o_data   = DW'(window >> (32'(o) * 8));
    lo_lane  = first_out ? d_off : '0;
    hi_lane  = last_out ? last_lane : DBL'(DB - 1);
    o_strb   = ({DB{1'b1}} << lo_lane) & ({DB{1'b1}} >> (DBL'(DB - 1) - hi_lane));
    o_nbytes = {1'b0, hi_lane} - {1'b0, lo_lane} + 1'b1;
    o_addr   = {c_dst[63:DBL], {DBL{1'b0}}} + {{(64-CW-DBL){1'b0}}, out_cnt, {DBL{1'b0}}};
    o_last   = last_out || (&o_addr[MAX_PAYLOAD_LOG2-1:DBL]);
  end

  always_comb begin
    c_pop      = 1'b0;
    in_pop     = 1'b0;
    o_load     = 1'b0;
    o_complete = 1'b0;
    halt_ev    = 1'b0;
    halt_code  = ERR_READ_FAULT;
    halt_idx   = c_idx;
    if (c_valid) begin
      if (c_pseudo) begin
        if (c_killed) c_pop = 1'b1;
        else if (out_idle) begin
          halt_ev   = 1'b1;
          halt_code = c_err;
          c_pop     = 1'b1;
        end
      end else if (c_killed && !req_open) begin
        if (!in_done) in_pop = in_valid;
        else c_pop = 1'b1;
      end else if (need_halt) begin
        halt_ev = out_idle;
      end else if (!in_done) begin
        if (in_valid && (!produce || out_ok)) begin
          in_pop = 1'b1;
          o_load = produce;
        end
      end else if (!out_done) begin
        o_load = out_ok;               // flush word
      end else begin
        c_pop = 1'b1;
      end
    end
    // A descriptor completes with the last word of its last chunk, unless the
    // chunk faulted or its channel was killed meanwhile.
    o_complete = o_load && last_out && c_lastdesc && !c_killed && !fault_seen &&
                 !(!in_done && in_err);
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      in_cnt     <= '0;
      out_cnt    <= '0;
      prev       <= '0;
      fault_seen <= 1'b0;
      req_open   <= 1'b0;
    end else begin
      if (in_pop) begin
        in_cnt <= in_cnt + CW'(1);
        prev   <= in_data;
        if (in_err) fault_seen <= 1'b1;
      end
      if (o_load) begin
        out_cnt  <= out_cnt + CW'(1);
        req_open <= !o_last;
      end
      if (c_pop) begin
        in_cnt     <= '0;
        out_cnt    <= '0;
        fault_seen <= 1'b0;
        req_open   <= 1'b0;
      end
    end
  end
endmodule
