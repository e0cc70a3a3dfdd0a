"""The primitive ops, each one class (see `base.Op`): forward on arrays (optionally into
`out=`), shape/dtype rule, vjp rule, and the facts graph mode reads (kind, what it may
overwrite, its scratch, its scalar expression). Adding an op is one class and one function.

Python scalars may stand in for operands (`x * 2.0`); they are weakly typed, as in NumPy 2,
so they never change a tensor's dtype. Composites (mean, sum_to, swapaxes) are built on the
primitives, so autodiff and graph mode only ever see primitives.
"""

# fmt: off
# isort: off
from trainctl.autograd.ops.base import (
    ANY, REGISTRY, Op, Operand, Scratch, Spec, Thunk, apply, normalize_axes, reduced, shape_of,
)
from trainctl.autograd.ops.elementwise import (
    Abs, Add, Cast, Comparison, Div, Elementwise, Elu, Equal, Exp, Greater, GreaterEqual, Log,
    Maximum, Mul, Neg, Pow, Relu, Sigmoid, Silu, Softplus, Sqrt, Sub, Tanh, Where, absolute,
    add, cast, div, elu, equal, exp, greater, greater_equal, log, maximum, mul, neg, power,
    relu, sigmoid, silu, softplus, sqrt, sub, tanh, where,
)
from trainctl.autograd.ops.conv import (
    Conv2d, Conv2dInputGrad, Conv2dWeightGrad, conv2d, conv2d_input_grad, conv2d_weight_grad,
)
from trainctl.autograd.ops.layers import (
    Col2im, Dropout, Im2col, Matmul, MaxPool2d, MaxPool2dGrad, col2im, col2im_transposes,
    dropout, im2col, mask_dtype, matmul, max_pool2d, max_pool2d_grad,
)
from trainctl.autograd.ops.normalization import (
    BatchNormTrain, BatchNormTrainGrad, ChannelCenter, ChannelDot, ChannelSum, batch_norm_train,
    batch_norm_train_grad, channel_center, channel_dot, channel_sum,
)
from trainctl.autograd.ops.shaping import (
    BroadcastTo, Concatenate, GatherRows, Getitem, Max, Reduction, Reshape, ScatterAddRows, Sum,
    Transpose, Unslice, View, broadcast_to, concatenate, gather_rows, getitem, mean,
    reduce_max, reduce_sum, reshape, scatter_add_rows, sum_to, swapaxes, transpose, unslice,
)
from trainctl.autograd.ops.softmax import (
    LogSoftmax, OneHot, Softmax, SoftmaxCrossEntropy, log_softmax,
    one_hot, softmax, softmax_cross_entropy,
)
# isort: on
# fmt: on
