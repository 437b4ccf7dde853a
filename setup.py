"""robustmq_jax: robustness of quantized image classifiers, in compiled JAX."""

import setuptools

# Minimum versions that resolve together on Python 3.11 (CPU, GPU, TPU).
INSTALL_REQUIRES = [
    'jax>=0.10.0',
    'jaxlib>=0.10.0',
    'flax>=0.12.0',
    'optax>=0.2.4',
    'aqtp==0.9.0',  # quant/compat.py shims this exact release for jax 0.10.
    'dm-pix>=0.4.3',
    'chex>=0.1.90',
    'tensorflow-datasets>=4.9.7',
    'importlib_resources>=6.0',  # Needed by TFDS, not declared by it.
    'absl-py>=2.1',
    'ml-collections>=1.0',
    'numpy>=2.0',
    'scipy>=1.13',
    'orbax-checkpoint>=0.11',
    'pillow>=11.0',
    'opencv-python-headless>=4.10',
    'imageio-ffmpeg>=0.5',  # Ships an ffmpeg binary (systematic decoders).
    'simplejpeg>=1.7',  # libjpeg-turbo decoder (systematic decoders).
    'matplotlib>=3.8',
    'safetensors>=0.4',  # Quantized checkpoints (quant/storage.py).
    'scikit-image>=0.24',
    'grain>=0.2.12',  # Parallel JPEG decoding (data/pipeline.py).
    'array-record>=0.5',  # TFDS ArrayRecord sources (fake ImageNet).
    'statsmodels>=0.14',  # Intervals and tests of the findings.
    'Jinja2>=3.1',  # report.html.
]

EXTRAS = {
    # Reading / building TFDS tfrecord datasets (ImageNet) needs TensorFlow.
    'imagenet': ['tensorflow-cpu>=2.16'],
    # Reading .safetensors / .pth weights in scripts/convert_weights.py.
    'convert': ['safetensors>=0.4'],
    # Test tools and the reference implementations the tests compare with.
    # timm, torchattacks, torchvision and imagecorruptions are installed with
    # --no-deps from requirements-test.txt (their declared dependencies pull
    # CUDA builds of torch or the GUI build of OpenCV).
    'test': [
        'pytest>=8.0',
        'torch==2.13.0',
        'scikit-learn>=1.4',
        'huggingface_hub>=0.20',
        'safetensors>=0.4',
        'foolbox>=3.3.4',
        'eagerpy>=0.30.0',
        'numba>=0.60',
        'requests>=2.31',
        'tqdm>=4.66',
    ],
}

setuptools.setup(
    name='robustmq_jax',
    version='0.1.0',
    description='Robustness benchmark of quantized image classifiers in JAX.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['robustmq_jax', 'robustmq_jax.*']),
    package_data={'robustmq_jax': ['data/*.npz',
                                'reporting/templates/*.j2']},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={'console_scripts': ['robustmq=robustmq_jax.main:entry']},
)
