// C ABI around the Verilated fdma_top model, for the Rust harness (src/rtl.rs).
//
// One call clocks one engine cycle: the inputs are applied, the clock rises
// and falls, and the outputs are copied out. The RTL's outputs depend on
// registered state only (fpga/rtl/PORTS.md), so the outputs returned after
// cycle n are exactly what the harness sees before edge n+1.
//
// Data buses are passed as little-endian byte arrays: byte lane i of a
// datapath word is bits [8i+7:8i], which is also the byte order of
// Verilator's VlWide word array on a little-endian host.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "Vfdma_top.h"
#include "verilated.h"
#include "verilated_fst_c.h"

#define FDMA_DB 32

extern "C" {

struct FdmaIn {
    uint8_t rst_n;
    uint8_t reg_req_valid;
    uint8_t reg_req_write;
    uint8_t hr_req_ready;
    uint8_t hr_rsp_valid;
    uint8_t hr_rsp_last;
    uint8_t hr_rsp_err;
    uint8_t hw_ready;
    uint8_t cr_req_ready;
    uint8_t cr_rsp_valid;
    uint8_t cr_rsp_last;
    uint8_t cr_rsp_err;
    uint8_t cw_ready;
    uint8_t irq_ready;
    uint8_t pad_[2];
    uint32_t reg_req_addr;
    uint32_t reg_req_wdata;
    uint8_t hr_rsp_data[FDMA_DB];
    uint8_t cr_rsp_data[FDMA_DB];
};

struct FdmaOut {
    uint8_t reg_rsp_valid;
    uint8_t hr_req_valid;
    uint8_t hr_rsp_ready;
    uint8_t hw_valid;
    uint8_t hw_last;
    uint8_t cr_req_valid;
    uint8_t cr_rsp_ready;
    uint8_t cw_valid;
    uint8_t cw_last;
    uint8_t irq_valid;
    uint8_t quiescent;
    uint8_t pad_[1];
    uint32_t reg_rsp_rdata;
    uint32_t hr_req_len;
    uint32_t cr_req_len;
    uint32_t hw_strb;
    uint32_t cw_strb;
    uint32_t irq_vector;
    uint32_t pad2_;
    uint64_t hr_req_addr;
    uint64_t hw_addr;
    uint64_t cr_req_addr;
    uint64_t cw_addr;
    uint64_t cycle_count;
    uint8_t hw_data[FDMA_DB];
    uint8_t cw_data[FDMA_DB];
};

struct FdmaModel {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vfdma_top> top;
    std::unique_ptr<VerilatedFstC> trace;
    uint64_t time = 0;
};

// The Rust mirrors (src/rtl.rs) test the same offsets.
static_assert(offsetof(FdmaIn, reg_req_addr) == 16, "FdmaIn layout");
static_assert(offsetof(FdmaIn, hr_rsp_data) == 24, "FdmaIn layout");
static_assert(sizeof(FdmaIn) == 24 + 2 * FDMA_DB, "FdmaIn layout");
static_assert(offsetof(FdmaOut, reg_rsp_rdata) == 12, "FdmaOut layout");
static_assert(offsetof(FdmaOut, hr_req_addr) == 40, "FdmaOut layout");
static_assert(offsetof(FdmaOut, hw_data) == 80, "FdmaOut layout");
static_assert(sizeof(FdmaOut) == 80 + 2 * FDMA_DB, "FdmaOut layout");

static_assert(sizeof(((Vfdma_top*)nullptr)->hr_rsp_data) == FDMA_DB,
              "datapath width of the RTL differs from the harness (FDMA_DB)");

static void read_outputs(const Vfdma_top* t, FdmaOut* o) {
    o->reg_rsp_valid = t->reg_rsp_valid;
    o->reg_rsp_rdata = t->reg_rsp_rdata;
    o->hr_req_valid = t->hr_req_valid;
    o->hr_req_addr = t->hr_req_addr;
    o->hr_req_len = t->hr_req_len;
    o->hr_rsp_ready = t->hr_rsp_ready;
    o->hw_valid = t->hw_valid;
    o->hw_addr = t->hw_addr;
    std::memcpy(o->hw_data, t->hw_data.data(), FDMA_DB);
    o->hw_strb = t->hw_strb;
    o->hw_last = t->hw_last;
    o->cr_req_valid = t->cr_req_valid;
    o->cr_req_addr = t->cr_req_addr;
    o->cr_req_len = t->cr_req_len;
    o->cr_rsp_ready = t->cr_rsp_ready;
    o->cw_valid = t->cw_valid;
    o->cw_addr = t->cw_addr;
    std::memcpy(o->cw_data, t->cw_data.data(), FDMA_DB);
    o->cw_strb = t->cw_strb;
    o->cw_last = t->cw_last;
    o->irq_valid = t->irq_valid;
    o->irq_vector = t->irq_vector;
    o->quiescent = t->quiescent;
    o->cycle_count = t->cycle_count;
}

// Create a model. `trace_path` may be null (no waveform) or a path for an FST file.
FdmaModel* fdma_model_new(const char* trace_path) {
    auto* m = new FdmaModel();
    m->ctx = std::make_unique<VerilatedContext>();
    m->ctx->threads(1);
    if (trace_path) m->ctx->traceEverOn(true);
    m->top = std::make_unique<Vfdma_top>(m->ctx.get(), "fdma");
    if (trace_path) {
        m->trace = std::make_unique<VerilatedFstC>();
        m->top->trace(m->trace.get(), 99);
        m->trace->open(trace_path);
    }
    m->top->clk = 0;
    m->top->rst_n = 0;
    m->top->eval();
    return m;
}

void fdma_model_free(FdmaModel* m) {
    if (!m) return;
    if (m->trace) m->trace->close();
    m->top->final();
    delete m;
}

// Apply `in`, clock one cycle, copy the outputs to `out`.
void fdma_model_tick(FdmaModel* m, const FdmaIn* in, FdmaOut* out) {
    Vfdma_top* t = m->top.get();
    t->rst_n = in->rst_n;
    t->reg_req_valid = in->reg_req_valid;
    t->reg_req_write = in->reg_req_write;
    t->reg_req_addr = in->reg_req_addr;
    t->reg_req_wdata = in->reg_req_wdata;
    t->hr_req_ready = in->hr_req_ready;
    t->hr_rsp_valid = in->hr_rsp_valid;
    t->hr_rsp_last = in->hr_rsp_last;
    t->hr_rsp_err = in->hr_rsp_err;
    std::memcpy(t->hr_rsp_data.data(), in->hr_rsp_data, FDMA_DB);
    t->hw_ready = in->hw_ready;
    t->cr_req_ready = in->cr_req_ready;
    t->cr_rsp_valid = in->cr_rsp_valid;
    t->cr_rsp_last = in->cr_rsp_last;
    t->cr_rsp_err = in->cr_rsp_err;
    std::memcpy(t->cr_rsp_data.data(), in->cr_rsp_data, FDMA_DB);
    t->cw_ready = in->cw_ready;
    t->irq_ready = in->irq_ready;
    t->clk = 1;
    t->eval();
    if (m->trace) m->trace->dump(m->time);
    m->time += 2;
    t->clk = 0;
    t->eval();
    if (m->trace) m->trace->dump(m->time - 1);
    read_outputs(t, out);
}

// Outputs as they are now, without clocking.
void fdma_model_peek(FdmaModel* m, FdmaOut* out) { read_outputs(m->top.get(), out); }

// Flush the waveform so a crash or kill keeps what was traced.
void fdma_model_flush(FdmaModel* m) {
    if (m->trace) m->trace->flush();
}

}  // extern "C"
