// fdma_fetch - descriptor fetch completion: splits the response beats of one
// fetch read into 32-byte descriptors (one per cycle), decodes and validates
// each, and hands it to its channel.
//
// Validation happens here, once, in exactly the order of Descriptor::check in
// hw/src/desc.rs: magic/reserved flags -> ERR_DESC_RSVD, direction 3 ->
// ERR_DESC_DIR, length 0 or above 2^MAX_DESC_LEN_LOG2 -> ERR_DESC_LEN, card
// range (with overflow) -> ERR_CARD_RANGE. A fetch beat that completed with
// err turns every descriptor it carries into ERR_FETCH_FAULT. The code travels
// with the descriptor: the channel only acts on it when the descriptor becomes
// the next one to run, so earlier descriptors still complete first and the
// halt reports HEAD == ERR_INDEX.
module fdma_fetch import fdma_hw_pkg::*; #(
    parameter int DATA_BYTES_LOG2   = DEF_DATA_BYTES_LOG2,
    parameter int CARD_MEM_LOG2     = DEF_CARD_MEM_LOG2,
    parameter int MAX_DESC_LEN_LOG2 = DEF_MAX_DESC_LEN_LOG2,
    parameter int KW                = 3,
    parameter int SW                = 1,   // slot index width: max(1, DATA_BYTES_LOG2-5)
    parameter int DESC_W            = 172
) (
    input  logic                           clk,
    input  logic                           rst,
    input  logic                           in_valid,
    input  logic [(8<<DATA_BYTES_LOG2)-1:0] in_data,
    input  logic                           in_err,
    input  logic [KW-1:0]                  k,       // descriptors in this fetch read
    input  logic [SW-1:0]                  slot0,   // descriptor slot of the first beat
    output logic                           in_pop,  // beat consumed
    output logic                           done,    // last descriptor of the read
    output logic                           arrive,
    output logic [DESC_W-1:0]              desc     // {src, dst, len, dir, irq, eoj, err}
);
  localparam int SLOTS = (DATA_BYTES_LOG2 > 5) ? (1 << (DATA_BYTES_LOG2 - 5)) : 1;

  logic [KW-1:0] cnt;
  logic [SW-1:0] sp, slot;
  assign slot = (cnt == '0) ? slot0 : sp;

  // The software tag (DESC_OFF_TAG) is opaque to the card and not extracted.
  localparam int DBITS = DESC_BYTES * 8;
  logic [63:0] src, dst;
  logic [31:0] len, flags, magic;
  assign src   = in_data[32'(slot) * DBITS + DESC_OFF_SRC*8   +: 64];
  assign dst   = in_data[32'(slot) * DBITS + DESC_OFF_DST*8   +: 64];
  assign len   = in_data[32'(slot) * DBITS + DESC_OFF_LEN*8   +: 32];
  assign flags = in_data[32'(slot) * DBITS + DESC_OFF_FLAGS*8 +: 32];
  assign magic = in_data[32'(slot) * DBITS + DESC_OFF_MAGIC*8 +: 32];

  localparam logic [63:0] CARD_BYTES = 64'd1 << CARD_MEM_LOG2;
  localparam logic [31:0] MAX_LEN    = 32'd1 << MAX_DESC_LEN_LOG2;

  logic [1:0]  dir;
  logic [63:0] card_addr;
  logic [7:0]  code;
  always_comb begin
    dir       = flags[1:0];
    card_addr = (dir == DIR_H2C) ? dst : src;
    if ((magic != DESC_MAGIC) || ((flags & FLAG_RESERVED) != 32'd0)) code = ERR_DESC_RSVD;
    else if ((flags & FLAG_DIR_MASK) == 32'd3)                       code = ERR_DESC_DIR;
    else if ((len == 32'd0) || (len > MAX_LEN))                        code = ERR_DESC_LEN;
    else if ((dir != DIR_H2H) &&
             ((card_addr >= CARD_BYTES) || ((CARD_BYTES - card_addr) < {32'd0, len})))
                                                                       code = ERR_CARD_RANGE;
    else                                                               code = ERR_NONE;
    if (in_err) code = ERR_FETCH_FAULT;
  end

  assign arrive = in_valid;
  assign desc   = {src, dst, len, dir, (flags & FLAG_IRQ) != 32'd0, (flags & FLAG_EOJ) != 32'd0, code};
  assign done   = in_valid && ((cnt + 1'b1) == k);
  assign in_pop = in_valid && (done || (32'(slot) == SLOTS - 1));

  always_ff @(posedge clk) begin
    if (rst) begin
      cnt <= '0;
      sp  <= '0;
    end else if (in_valid) begin
      cnt <= done ? '0 : cnt + 1'b1;
      sp  <= (32'(slot) == SLOTS - 1) ? '0 : slot + 1'b1;
    end
  end
endmodule
