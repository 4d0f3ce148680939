# Builds stylecam for Windows: a build venv with the chosen torch, the PyInstaller folder
# (installer\pyinstaller\stylecam.spec), a smoke test, and, where Inno Setup 6 is installed,
# the installer (installer\windows\stylecam.iss). Everything happens outside the repository.
#
#   powershell -ExecutionPolicy Bypass -File installer\windows\build.ps1 [-Flavor cpu|cu130|classic] [-Out DIR]
#
# -Flavor cpu    torch's CPU build (the default; runs on every PC)
# -Flavor cu130  torch for CUDA 13.0 (NVIDIA driver 580 or newer); build it on any PC, no GPU needed
# -Flavor classic  no torch at all: the classic styles only, a fraction of the size
# Needs Python 3.11 (the py launcher) and, for the installer, Inno Setup 6 (ISCC.exe).
param(
    [ValidateSet("cpu", "cu130", "classic")] [string]$Flavor = "cpu",
    [string]$Out = (Join-Path $env:TEMP "stylecam-package"),
    [string]$Python = "py",
    [string[]]$PythonArgs = @("-3.11"),
    [switch]$NoSmoke
)
$ErrorActionPreference = "Stop"
$repo = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path
if ($Out.StartsWith($repo, [System.StringComparison]::OrdinalIgnoreCase)) {
    throw "-Out $Out is inside the repository; build outside it (the default is %TEMP%\stylecam-package)"
}
$src = Join-Path $Out "src"
$venv = Join-Path $Out "venv-$Flavor"
$vpy = Join-Path $venv "Scripts\python.exe"
$started = Get-Date

Write-Host "stylecam: copying the sources to $src"
if (Test-Path $src) { Remove-Item -Recurse -Force $src }
New-Item -ItemType Directory -Force -Path $src | Out-Null
foreach ($item in "pyproject.toml", "README.md", "core", "desktop", "icons", "installer") {
    Copy-Item -Recurse -Path (Join-Path $repo $item) -Destination $src
}

if (-not (Test-Path (Join-Path $venv "Scripts\pyinstaller.exe"))) {
    Write-Host "stylecam: creating the build venv $venv"
    & $Python @PythonArgs -m venv $venv
    if ($LASTEXITCODE) { throw "could not create a venv with $Python $PythonArgs (install Python 3.11 from python.org)" }
    $constraints = Join-Path $venv "constraints.txt"
    Get-Content (Join-Path $repo "installer\constraints.txt") | Where-Object { $_ -notmatch "^torch==" } |
        Set-Content $constraints
    $version = (Select-String -Path (Join-Path $repo "installer\constraints.txt") -Pattern "^torch==(.+)$").Matches[0].Groups[1].Value
    if ($Flavor -eq "classic") {
        # The runtime dependencies minus the diffusion stack.
        $reqs = Join-Path $venv "requirements-classic.txt"
        & $vpy -c "import re,sys,tomllib; d=tomllib.load(open(sys.argv[1],'rb'))['project']['dependencies']; print('\n'.join(x for x in d if re.split(r'[<>=!~ \[;]',x,maxsplit=1)[0].lower() not in {'torch','diffusers','transformers','tokenizers'}))" (Join-Path $src "pyproject.toml") | Set-Content $reqs
        & $vpy -m pip install -c $constraints -r $reqs pyinstaller pillow
        & $vpy -m pip install --no-deps $src
    } else {
        $torch = if ($env:STYLECAM_TORCH) { $env:STYLECAM_TORCH -split " " } else {
            @("torch==$version", "--index-url", "https://download.pytorch.org/whl/$Flavor") }
        Write-Host "stylecam: installing $torch"
        & $vpy -m pip install @torch
        & $vpy -m pip install -c $constraints $src pyinstaller pillow
    }
    if ($LASTEXITCODE) { throw "pip failed (see above)" }
}

Write-Host "stylecam: freezing (flavour $Flavor)"
$env:STYLECAM_SRC = $src
$env:STYLECAM_FLAVOR = $Flavor
& (Join-Path $venv "Scripts\pyinstaller.exe") --noconfirm --clean --log-level WARN `
    --distpath (Join-Path $Out "dist\$Flavor") --workpath (Join-Path $Out "build-$Flavor") `
    (Join-Path $src "installer\pyinstaller\stylecam.spec")
if ($LASTEXITCODE) { throw "PyInstaller failed (see above)" }
$app = Join-Path $Out "dist\$Flavor\stylecam"
Set-Content -Path (Join-Path $app ".stylecam-flavor") -Value $Flavor
$sizeMb = [math]::Round(((Get-ChildItem -Recurse -File $app | Measure-Object -Sum Length).Sum) / 1MB)
Write-Host ("stylecam package: flavour {0}, {1}, {2} MB, {3:n0} s" -f $Flavor, $app, $sizeMb, ((Get-Date) - $started).TotalSeconds)

if (-not $NoSmoke) {
    # The smoke test is a bash script; Git for Windows brings bash.
    $bash = Get-Command bash -ErrorAction SilentlyContinue
    if ($bash) {
        & $bash.Source (Join-Path $repo "installer/smoke_frozen.sh") $app
        if ($LASTEXITCODE) { throw "the smoke test failed" }
    } else {
        Write-Warning "bash not found (install Git for Windows): smoke test skipped"
    }
}

# The app icon for the installer itself (PyInstaller turned the PNG into the .exe icons already).
$ico = Join-Path $Out "stylecam.ico"
& $vpy -c "import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2], sizes=[(16,16),(24,24),(32,32),(48,48),(64,64),(128,128),(256,256)])" `
    (Join-Path $repo "icons\png\stylecam-running-256.png") $ico
$iscc = @("${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe", "$env:ProgramFiles\Inno Setup 6\ISCC.exe",
          "$env:LOCALAPPDATA\Programs\Inno Setup 6\ISCC.exe") | Where-Object { Test-Path $_ } | Select-Object -First 1
if ($iscc) {
    & $iscc "/DFlavor=$Flavor" "/DSourceDir=$app" "/DOutputDir=$Out" "/DIconFile=$ico" (Join-Path $PSScriptRoot "stylecam.iss")
    if ($LASTEXITCODE) { throw "Inno Setup failed (see above)" }
    Write-Host "stylecam: installer in $Out"
} else {
    Write-Warning "Inno Setup 6 not found (https://jrsoftware.org/isinfo.php): the app folder is $app; no installer made"
}
