"""Network architectures, with the official Real-ESRGAN / BasicSR state-dict key names."""

from vidsr.models.arch.discriminator import UNetDiscriminatorSN
from vidsr.models.arch.rrdbnet import RRDBNet
from vidsr.models.arch.srvgg import SRVGGNetCompact

ARCHITECTURES = {"SRVGGNetCompact": SRVGGNetCompact, "RRDBNet": RRDBNet}

__all__ = ["ARCHITECTURES", "RRDBNet", "SRVGGNetCompact", "UNetDiscriminatorSN"]
