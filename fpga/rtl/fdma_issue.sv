// fdma_issue - everything that starts work: round-robin choice of the next
// descriptor fetch and of the next chunk, the read-request splitter, and the
// host/card read-request output registers.
//
// * Fetch: channels with free descriptor-queue credits ask for a fetch; one is
//   chosen round-robin. A fetch read carries up to DQ_DEPTH contiguous
//   descriptors, already limited by the channel to the ring end, a 4 KiB
//   boundary and 2^MAX_READ_LOG2 bytes. Fetches win the host request register
//   over data reads: they are few (credit-bounded) and keep every channel fed.
// * Chunks: channels with a descriptor in progress ask for a chunk (at most
//   4 KiB of source, never crossing a 4 KiB source boundary); one is chosen
//   round-robin, so a huge descriptor on one channel cannot starve another.
//   The chunk is queued for the realigner at once and its reads are issued
//   back to back by the splitter: pieces of at most 2^MAX_READ_LOG2 bytes cut
//   at 2^MAX_READ_LOG2-aligned source addresses (hence DB-aligned, never
//   across 4 KiB). Chunk selection does not wait for data: the chunk queue and
//   MAX_READS outstanding reads keep several chunks in flight.
// * Each request register holds its payload until the handshake (outputs are
//   registers). A host request is pushed to the request-kind queue when it is
//   accepted, so the completion router knows, in order, whether each
//   completion is a fetch (and for whom) or data.
module fdma_issue import fdma_hw_pkg::*; #(
    parameter int CHANNELS        = DEF_CHANNELS,
    parameter int CHW             = 2,
    parameter int KW              = 3,
    parameter int SW              = 1,
    parameter int DATA_BYTES_LOG2 = DEF_DATA_BYTES_LOG2,
    parameter int MAX_READ_LOG2   = DEF_MAX_READ_LOG2,
    parameter int MAX_READS       = DEF_MAX_READS
) (
    input  logic                           clk,
    input  logic                           rst,
    // descriptor fetch requests
    input  logic [CHANNELS-1:0]            fetch_want,
    input  logic [CHANNELS-1:0][63:0]      fetch_addr,
    input  logic [CHANNELS-1:0][KW-1:0]    fetch_k,
    output logic [CHANNELS-1:0]            fetch_grant,
    // chunk requests
    input  logic [CHANNELS-1:0]            chunk_want,
    input  logic [CHANNELS-1:0]            c_pseudo,
    input  logic [CHANNELS-1:0][63:0]      c_src,
    input  logic [CHANNELS-1:0][12:0]      c_n,
    input  logic [CHANNELS-1:0]            c_src_card,
    output logic [CHANNELS-1:0]            chunk_grant,
    output logic                           cq_push,
    output logic [CHW-1:0]                 cq_ch,
    input  logic                           cq_full,
    // host read requests
    output logic                           hr_req_valid,
    input  logic                           hr_req_ready,
    output logic [63:0]                    hr_req_addr,
    output logic [12:0]                    hr_req_len,
    input  logic                           hr_done,     // last beat of a host read arrived
    output logic                           kq_push,
    output logic                           kq_fetch,
    output logic [CHW-1:0]                 kq_ch,
    output logic [KW-1:0]                  kq_k,
    output logic [SW-1:0]                  kq_slot,
    output logic [15:0]                    hr_out,
    // card read requests
    output logic                           cr_req_valid,
    input  logic                           cr_req_ready,
    output logic [63:0]                    cr_req_addr,
    output logic [12:0]                    cr_req_len,
    input  logic                           cr_done,
    output logic                           busy
);
  localparam int RD = 1 << MAX_READ_LOG2;

  function automatic logic [CHW-1:0] rr_pick(input logic [CHANNELS-1:0] req, input logic [CHW-1:0] last);
    logic [CHW-1:0] pick;
    pick = last;
    // Scan from the farthest to the nearest successor of `last`, so the
    // nearest requester wins.
    for (int i = CHANNELS; i >= 1; i--) begin
      if (req[(32'(last) + i) % CHANNELS]) pick = CHW'((32'(last) + i) % CHANNELS);
    end
    return pick;
  endfunction

  logic [CHW-1:0] f_last, c_last;
  logic [CHW-1:0] f_sel, c_sel;
  assign f_sel = rr_pick(fetch_want, f_last);
  assign c_sel = rr_pick(chunk_want, c_last);

  // splitter state: the chunk whose reads are being issued
  logic        rd_active, rd_card;
  logic [63:0] rd_addr;
  logic [12:0] rd_rem;
  logic [12:0] rd_len;
  logic [13:0] to_bound;
  always_comb begin
    to_bound = 14'(RD) - {1'b0, 13'(rd_addr[MAX_READ_LOG2-1:0])};
    rd_len   = ({1'b0, rd_rem} < to_bound) ? rd_rem : to_bound[12:0];
  end

  logic [15:0] cr_out;
  logic        hr_can, cr_can, load_fetch, load_hdata, load_cdata, chunk_go;
  assign hr_can     = (!hr_req_valid || hr_req_ready) && ((hr_out + {15'd0, hr_req_valid}) < 16'(MAX_READS));
  assign cr_can     = (!cr_req_valid || cr_req_ready) && ((cr_out + {15'd0, cr_req_valid}) < 16'(MAX_READS));
  assign load_fetch = hr_can && (|fetch_want);
  assign load_hdata = hr_can && !load_fetch && rd_active && !rd_card;
  assign load_cdata = cr_can && rd_active && rd_card;
  assign chunk_go   = !rd_active && (|chunk_want) && !cq_full;

  assign fetch_grant = load_fetch ? (CHANNELS'(1) << f_sel) : '0;
  assign chunk_grant = chunk_go   ? (CHANNELS'(1) << c_sel) : '0;
  assign cq_push = chunk_go;
  assign cq_ch   = c_sel;

  assign kq_push = hr_req_valid && hr_req_ready;
  assign busy    = rd_active || hr_req_valid || cr_req_valid || (hr_out != 16'd0) || (cr_out != 16'd0);

  always_ff @(posedge clk) begin
    if (rst) begin
      f_last <= '0; c_last <= '0;
      rd_active <= 1'b0; rd_card <= 1'b0; rd_addr <= '0; rd_rem <= '0;
      hr_req_valid <= 1'b0; hr_req_addr <= '0; hr_req_len <= '0;
      kq_fetch <= 1'b0; kq_ch <= '0; kq_k <= '0; kq_slot <= '0;
      cr_req_valid <= 1'b0; cr_req_addr <= '0; cr_req_len <= '0;
      hr_out <= '0; cr_out <= '0;
    end else begin
      hr_out <= hr_out + {15'd0, hr_req_valid && hr_req_ready} - {15'd0, hr_done};
      cr_out <= cr_out + {15'd0, cr_req_valid && cr_req_ready} - {15'd0, cr_done};

      if (hr_req_valid && hr_req_ready) hr_req_valid <= 1'b0;
      if (cr_req_valid && cr_req_ready) cr_req_valid <= 1'b0;

      if (load_fetch) begin
        f_last       <= f_sel;
        hr_req_valid <= 1'b1;
        hr_req_addr  <= fetch_addr[f_sel];
        hr_req_len   <= 13'({fetch_k[f_sel], 5'd0});
        kq_fetch     <= 1'b1;
        kq_ch        <= f_sel;
        kq_k         <= fetch_k[f_sel];
        kq_slot      <= (DATA_BYTES_LOG2 > 5) ? SW'(fetch_addr[f_sel] >> 5) : '0;
      end else if (load_hdata) begin
        hr_req_valid <= 1'b1;
        hr_req_addr  <= rd_addr;
        hr_req_len   <= rd_len;
        kq_fetch     <= 1'b0;
      end
      if (load_cdata) begin
        cr_req_valid <= 1'b1;
        cr_req_addr  <= rd_addr;
        cr_req_len   <= rd_len;
      end
      if (load_hdata || load_cdata) begin
        rd_addr <= rd_addr + {51'd0, rd_len};
        rd_rem  <= rd_rem - rd_len;
        if (rd_rem == rd_len) rd_active <= 1'b0;
      end

      if (chunk_go) begin
        c_last <= c_sel;
        if (!c_pseudo[c_sel]) begin
          rd_active <= 1'b1;
          rd_addr   <= c_src[c_sel];
          rd_rem    <= c_n[c_sel];
          rd_card   <= c_src_card[c_sel];
        end
      end
    end
  end
endmodule
