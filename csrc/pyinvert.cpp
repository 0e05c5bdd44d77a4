// Every pyinvert op schema, in one place. Device files (cpu/, cuda/) only add implementations;
// autograd and fake (meta) kernels are registered from Python next to the typed wrappers.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import pyinvert._C` loads this library, and loading it runs the registrations below.
// The module itself is empty: the ops are reached through torch.ops.pyinvert.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(pyinvert, m) {
  // Fused TV_beta + alpha-norm prior. Returns (value[B], grad[B,C,H,W]); grad is the weighted
  // dR/dx computed in the same pass, or an empty tensor when compute_grad is false.
  m.def(
      "image_prior(Tensor x, Tensor tv_weight, Tensor norm_weight, float beta, float alpha, "
      "bool isotropic, float eps, bool compute_grad) -> (Tensor, Tensor)");
  // HOG as VLFeat computes it. variant: 0 = UoCTTI, 1 = DalalTriggs.
  m.def(
      "hog(Tensor x, int cell_size, int num_orientations, int variant, "
      "bool bilinear_orientations, bool save_for_backward) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "_hog_backward(Tensor grad, Tensor x, Tensor hist, Tensor pixels, Tensor jacobian, "
      "int cell_size, int num_orientations, int variant, bool bilinear_orientations) -> Tensor");
  // Dense SIFT as VLFeat's vl_dsift computes it: descriptors [B, N, 128].
  m.def(
      "dsift(Tensor x, int step, int bin_size, bool flat_window, bool return_histograms) "
      "-> (Tensor, Tensor)");
  m.def(
      "_dsift_backward(Tensor grad, Tensor x, Tensor histograms, int step, int bin_size, "
      "bool flat_window) -> Tensor");
  // Per-row dot products of a, b [B, D] -> [B] in a fixed order that depends on D only
  // (common/rowwise_math.h): the batch-invariant sums of the per-row L-BFGS.
  m.def("rowwise_dot(Tensor a, Tensor b) -> Tensor");
  // The two-loop recursion -H g of each row from its own pairs S[slots[b, j], b], Y[...] (the
  // newest first, -1 after the last), fused, with rowwise_dot's sums (optim/lbfgs_state.py).
  m.def(
      "rowwise_two_loop(Tensor g, Tensor S, Tensor Y, Tensor rho, Tensor h, Tensor slots) "
      "-> Tensor");
  // The vector passes of lbfgs_tell (below) as ops of their own, so that each is tested bit for
  // bit against the tensor operations it fuses (tests/test_lbfgs_ops.py; optim/lbfgs_rows.py
  // calls lbfgs_tell only), each in one pass with the tensor path's roundings: g = grad *
  // scale with (max |g|, g.d); the accepted step
  // (x += t d, S/Y at the row's spare slot = t d, g - g_old) with (y.s, y.y); the next trial
  // per row mode (0 skip, 1 the two-loop direction d, 2 a step along d, 3 stay at x) with
  // (g.d, max |d|), trial = x + t d and z = trial * scale (z empty: not written).
  m.def("lbfgs_observe(Tensor grad, Tensor scale, Tensor d, Tensor(a!) g) -> (Tensor, Tensor)");
  m.def(
      "lbfgs_accept(Tensor g, Tensor g_old, Tensor d, Tensor t, Tensor rows, Tensor spare, "
      "Tensor(a!) x, Tensor(b!) S, Tensor(c!) Y) -> (Tensor, Tensor)");
  m.def(
      "lbfgs_advance(Tensor g, Tensor S, Tensor Y, Tensor rho, Tensor h, Tensor slots, "
      "Tensor modes, Tensor t, Tensor x, Tensor scale, Tensor(a!) d, Tensor(b!) trial, "
      "Tensor(c!) z) -> (Tensor, Tensor)");
  // One evaluation of the per-row L-BFGS taken by every row (optim/lbfgs_rows.py): the
  // gradient grad * grad_scale (empty: 1) and value f; the line search, the accepted step and
  // its pair, the stopping tests and the next trial (and z = trial * ask_scale when z is not
  // empty), all written in place; the packed per-row state's layout is in
  // common/lbfgs_tell_math.h.
  m.def(
      "lbfgs_tell(Tensor grad, Tensor grad_scale, Tensor f, Tensor ask_scale, Tensor(a!) real, "
      "Tensor(b!) ints, Tensor(c!) ring, Tensor(d!) x, Tensor(e!) G, Tensor(f!) d, "
      "Tensor(g!) lo_g, Tensor(h!) g_prev, Tensor(i!) trial, Tensor(j!) z, Tensor(k!) S, "
      "Tensor(l!) Y, Tensor(m!) rho, float c1, float c2, float lr, float tolerance_grad, "
      "float tolerance_change, int max_ls, int max_iter, int max_eval, bool line_search, "
      "bool started) -> ()");

  // Fields of Experts, valid positions only (no padding). expert: 'student_t' or 'logcosh'.
  // Returns (energy[B], grad_x[B,C,H,W], laplacian[B] or an empty tensor), one pass over x.
  m.def(
      "foe_energy_grad(Tensor x, Tensor filters, Tensor alphas, str expert, bool with_laplacian) "
      "-> (Tensor, Tensor, Tensor)");
  // d(sum_b grad_energy[b] * energy[b]) / d(filters, alphas).
  m.def(
      "foe_param_grad(Tensor x, Tensor filters, Tensor alphas, str expert, Tensor grad_energy) "
      "-> (Tensor, Tensor)");
}
