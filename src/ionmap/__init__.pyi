# Static view of ionmap's lazy public API (see __init__.py).
from . import chem as chem
from . import imzml as imzml
from . import kernels as kernels
from . import params as params
from . import pipeline as pipeline
from . import regions as regions
from . import report as report
from . import store as store
from . import synth as synth
from .batch import SpectrumBatch as SpectrumBatch
from .chem import Target as Target
from .engine import convert as convert
from .errors import ImzMLError as ImzMLError
from .errors import InputError as InputError
from .errors import IonmapError as IonmapError
from .errors import IonmapWarning as IonmapWarning
from .errors import MissingIbdError as MissingIbdError
from .errors import StorageError as StorageError
from .imzml import ImzMLFile as ImzMLFile
from .imzml import open_imzml as open_imzml
from .params import ConvertParams as ConvertParams
from .params import HotspotParams as HotspotParams
from .params import ImmuneParams as ImmuneParams
from .params import RecalibrationParams as RecalibrationParams
from .params import RegistrationParams as RegistrationParams
from .store import Result as Result
from .store import open_result as open_result

__version__: str
__all__: list[str]
